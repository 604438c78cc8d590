"""Tasks run once and are answered once through long runs, delays and crashes.

Test workers serve their own queue, provisioned with a 10-second visibility
timeout, and load a slow test task (:mod:`tests.support.slow_tasks`).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import LocalStack
from tests.support.workers import Workers

pytestmark = pytest.mark.integration

VISIBILITY = 10


@pytest.fixture(scope="module")
def pool(local_stack: LocalStack) -> Iterator[Workers]:
    workers = Workers.on_queue(local_stack, "reliability", visibility=VISIBILITY, wait_seconds=2)
    workers.start("rel1")
    try:
        yield workers
    finally:
        workers.close("rel1", "rel2")


def executions(marker: Path) -> list[str]:
    return marker.read_text().split() if marker.exists() else []


def wait_until(condition: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_task_longer_than_the_visibility_timeout_runs_once(pool: Workers, tmp_path: Path) -> None:
    marker = tmp_path / "long"
    result = pool.slow(2.5 * VISIBILITY, marker)
    assert result.get(timeout=120) == 2.5 * VISIBILITY
    time.sleep(3)
    assert len(executions(marker)) == 1


def test_countdown_longer_than_the_visibility_timeout_runs_once(
    pool: Workers, tmp_path: Path
) -> None:
    marker = tmp_path / "later"
    sent = time.time()
    result = pool.slow(0.1, marker, countdown=2.5 * VISIBILITY)
    assert result.get(timeout=120) == 0.1
    assert len(executions(marker)) == 1
    assert marker.stat().st_mtime - sent >= 2.5 * VISIBILITY - 1  # not run early


def test_worker_killed_mid_task_another_worker_answers_once(pool: Workers, tmp_path: Path) -> None:
    marker = tmp_path / "killed"
    result = pool.slow(4, marker)
    wait_until(lambda: len(executions(marker)) == 1)
    pool.kill("rel1")
    pool.start("rel2")
    try:
        assert result.get(timeout=120) == 4
        assert len(executions(marker)) == 2  # the killed run and the rerun
        time.sleep(3)
        assert len(executions(marker)) == 2
    finally:
        pool.stop("rel2")
        pool.start("rel1")


def test_pool_process_killed_its_task_is_requeued(pool: Workers, tmp_path: Path) -> None:
    marker = tmp_path / "oom"
    result = pool.slow(3, marker)
    wait_until(lambda: len(executions(marker)) == 1)
    os.kill(int(executions(marker)[0]), signal.SIGKILL)  # what the OOM killer does
    assert result.get(timeout=120) == 3
    assert len(executions(marker)) == 2
    assert pool.stack.pid("rel1") is not None


def test_a_task_rejected_with_requeue_is_redelivered_at_once_and_says_so(
    pool: Workers, tmp_path: Path
) -> None:
    marker = tmp_path / "requeue"
    result = pool.app.send_task("tests.requeue_once", args=[str(marker)])
    # Redelivered well within the visibility timeout (kombu's SQS transport hid a
    # requeued message for wait_time_seconds more), and marked as a redelivery.
    assert result.get(timeout=VISIBILITY - 2) == "second-pass"
    assert executions(marker) == ["False", "True"]
