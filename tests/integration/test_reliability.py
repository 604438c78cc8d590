"""Tasks run once and are answered once through long runs, delays and crashes.

Test workers serve their own queue, provisioned with a 10-second visibility
timeout, and load a slow test task (:mod:`tests.support.slow_tasks`).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy import local
from deploy.provision import provision
from tasks.application import CloudworkerCelery, create_app
from tests.integration.conftest import ROOT, LocalStack

pytestmark = pytest.mark.integration

VISIBILITY = 10


@dataclasses.dataclass
class Pool:
    stack: LocalStack
    app: CloudworkerCelery
    env: dict[str, str]

    def start(self, name: str) -> None:
        command = [*local.worker_command(name, 2), "--include=tests.support.slow_tasks"]
        local.start_process(self.stack.stack, name, command, self.env)

    def stop(self, name: str) -> None:
        local.stop_process(self.stack.stack, name)

    def kill(self, name: str) -> None:
        pid = self.stack.stack.pid(name)
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)
        self.stack.stack.pid_file(name).unlink()

    def slow(self, seconds: float, marker: Path, **options: object) -> object:
        return self.app.send_task("tests.slow", args=[seconds, str(marker)], **options)


@pytest.fixture(scope="module")
def pool(local_stack: LocalStack) -> Iterator[Pool]:
    settings = dataclasses.replace(
        local_stack.settings, task_queue="reliability", visibility_timeout=VISIBILITY
    )
    provision(settings, sqs=local_stack.client("sqs"), s3=local_stack.client("s3"))
    env = {
        **os.environ,
        **local_stack.env,
        "CLOUDWORKER_TASK_QUEUE": "reliability",
        "CLOUDWORKER_VISIBILITY_TIMEOUT": str(VISIBILITY),
        "CLOUDWORKER_WAIT_SECONDS": "2",
        "CLOUDWORKER_INBOX_ENABLED": "false",
        "PYTHONPATH": str(ROOT),
    }
    app = create_app(settings)
    pool = Pool(local_stack, app, env)
    pool.start("rel1")
    try:
        yield pool
    finally:
        app.services.mailbox.close()
        for name in ("rel1", "rel2"):
            pool.stop(name)


def executions(marker: Path) -> list[str]:
    return marker.read_text().split() if marker.exists() else []


def wait_until(condition: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_task_longer_than_the_visibility_timeout_runs_once(pool: Pool, tmp_path: Path) -> None:
    marker = tmp_path / "long"
    result = pool.slow(2.5 * VISIBILITY, marker)
    assert result.get(timeout=120) == 2.5 * VISIBILITY  # type: ignore[attr-defined]
    time.sleep(3)
    assert len(executions(marker)) == 1


def test_countdown_longer_than_the_visibility_timeout_runs_once(pool: Pool, tmp_path: Path) -> None:
    marker = tmp_path / "later"
    sent = time.time()
    result = pool.slow(0.1, marker, countdown=2.5 * VISIBILITY)
    assert result.get(timeout=120) == 0.1  # type: ignore[attr-defined]
    assert len(executions(marker)) == 1
    assert marker.stat().st_mtime - sent >= 2.5 * VISIBILITY - 1  # not run early


def test_worker_killed_mid_task_another_worker_answers_once(pool: Pool, tmp_path: Path) -> None:
    marker = tmp_path / "killed"
    result = pool.slow(4, marker)
    wait_until(lambda: len(executions(marker)) == 1)
    pool.kill("rel1")
    pool.start("rel2")
    try:
        assert result.get(timeout=120) == 4  # type: ignore[attr-defined]
        assert len(executions(marker)) == 2  # the killed run and the rerun
        time.sleep(3)
        assert len(executions(marker)) == 2
    finally:
        pool.stop("rel2")
        pool.start("rel1")


def test_pool_process_killed_its_task_is_requeued(pool: Pool, tmp_path: Path) -> None:
    marker = tmp_path / "oom"
    result = pool.slow(3, marker)
    wait_until(lambda: len(executions(marker)) == 1)
    os.kill(int(executions(marker)[0]), signal.SIGKILL)  # what the OOM killer does
    assert result.get(timeout=120) == 3  # type: ignore[attr-defined]
    assert len(executions(marker)) == 2
    assert pool.stack.worker_alive("rel1")
