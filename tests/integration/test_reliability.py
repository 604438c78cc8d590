"""Tasks run once and are answered once through long runs, delays and crashes.

Test workers serve their own queue, provisioned with a 6-second visibility
timeout, and load a slow test task (:mod:`tests.support.slow_tasks`). A task that
"ran once" has had its message deleted: once the queue holds nothing, visible or
in flight, no later delivery can come.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import LocalStack
from tests.support.waiting import eventually
from tests.support.workers import Workers

pytestmark = pytest.mark.integration

#: Seconds; the tasks and countdowns below last 2.5 times as long.
VISIBILITY = 6
QUEUE = "reliability"


@pytest.fixture(scope="module")
def pool(local_stack: LocalStack) -> Iterator[Workers]:
    workers = Workers.on_queue(local_stack, QUEUE, visibility=VISIBILITY, wait_seconds=2)
    workers.start("rel1")
    try:
        yield workers
    finally:
        workers.close("rel1", "rel2")


def executions(marker: Path) -> list[str]:
    return marker.read_text().split() if marker.exists() else []


def drained(pool: Workers, stack: LocalStack) -> None:
    """Wait until the test queue holds no message at all: none can be delivered again."""
    assert stack.wait_for_depth(pool.app.services.settings.task_queue_name, 0)


def test_task_longer_than_the_visibility_timeout_runs_once(
    pool: Workers, local_stack: LocalStack, tmp_path: Path
) -> None:
    marker = tmp_path / "long"
    result = pool.slow(2.5 * VISIBILITY, marker)
    assert result.get(timeout=120) == 2.5 * VISIBILITY
    drained(pool, local_stack)
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


def test_worker_killed_mid_task_another_worker_answers_once(
    pool: Workers, local_stack: LocalStack, tmp_path: Path
) -> None:
    marker = tmp_path / "killed"
    result = pool.slow(4, marker)
    eventually(lambda: len(executions(marker)) == 1, what="the task started")
    pool.kill("rel1")
    pool.start("rel2")
    try:
        assert result.get(timeout=120) == 4
        drained(pool, local_stack)
        assert len(executions(marker)) == 2  # the killed run and the rerun
    finally:
        pool.stop("rel2")
        pool.start("rel1")


def test_pool_process_killed_its_task_is_requeued(pool: Workers, tmp_path: Path) -> None:
    marker = tmp_path / "oom"
    result = pool.slow(3, marker)
    eventually(lambda: len(executions(marker)) == 1, what="the task started")
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
    assert result.get(timeout=VISIBILITY - 1) == "second-pass"
    assert executions(marker) == ["False", "True"]
