"""A running task's states reach its caller and every other process (issue #15).

Real workers on their own queue, with ``CLOUDWORKER_STATE_INTERVAL`` short so a
few seconds of work show several states. The waits are bounded; nothing here
asserts on how long anything took.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import states

from cloudworker.application import create_app
from tests.integration.conftest import LocalStack
from tests.support.waiting import eventually
from tests.support.workers import Workers

pytestmark = pytest.mark.integration

PATIENCE = 60.0


@pytest.fixture(scope="module")
def fleet(local_stack: LocalStack) -> Iterator[Workers]:
    workers = Workers.on_queue(local_stack, "states", visibility=60, wait_seconds=1)
    workers.start("states1", wait_ready=True, env={"CLOUDWORKER_STATE_INTERVAL": "0.2"})
    try:
        yield workers
    finally:
        workers.close("states1")


def observe(fleet: Workers, task_id: str, until: Callable[[Any], bool]) -> Any:
    """A fresh app (as another process has) reading ``task_id`` until ``until(result)``."""
    other = create_app(fleet.app.services.settings)
    result = eventually(
        lambda: found if until(found := other.AsyncResult(task_id)) else None,
        timeout=PATIENCE,
        what=f"{task_id} reached the state looked for",
    )
    return result.state, result.info


def test_a_progress_bar_fed_by_update_state(fleet: Workers) -> None:
    result = fleet.app.send_task("tests.progress", args=[8, 0.4])
    seen: list[dict[str, Any]] = []
    assert result.get(timeout=PATIENCE, on_message=seen.append) == 8
    assert seen[-1]["status"] == states.SUCCESS
    assert seen[-1]["result"] == 8
    running = seen[:-1]
    assert {meta["status"] for meta in running} <= {states.STARTED, "PROGRESS"}
    steps = [meta["result"]["current"] for meta in running if meta["status"] == "PROGRESS"]
    assert len(steps) >= 3, seen  # eight steps 0.4 s apart, written every 0.2 s at most
    assert steps == sorted(set(steps))
    assert all(meta["result"]["total"] == 8 for meta in running if meta["status"] == "PROGRESS")
    assert result.state == states.SUCCESS


def test_another_process_reads_the_progress_from_s3(fleet: Workers) -> None:
    result = fleet.app.send_task("tests.progress", args=[10, 0.5])
    state, info = observe(
        fleet, result.id, lambda r: r.state == "PROGRESS" and r.info["current"] >= 2
    )
    assert state == "PROGRESS"
    assert info["total"] == 10
    assert 2 <= info["current"] <= 10
    assert result.get(timeout=PATIENCE) == 10
    assert observe(fleet, result.id, lambda r: r.ready()) == (states.SUCCESS, 10)


def test_a_running_task_reads_started_with_its_worker(fleet: Workers, tmp_path: Any) -> None:
    result = fleet.slow(3, tmp_path / "marker")
    state, info = observe(fleet, result.id, lambda r: r.state != states.PENDING)
    assert state == states.STARTED
    assert info["hostname"].startswith("states1@")
    assert isinstance(info["pid"], int)
    assert result.get(timeout=PATIENCE) == 3


def test_a_retrying_task_reads_retry_with_its_exception(fleet: Workers) -> None:
    result = fleet.app.send_task("tests.retry_once", args=[3])
    # STARTED may show first, for the interval the first run took.
    state, info = observe(
        fleet, result.id, lambda r: r.state not in (states.PENDING, states.STARTED)
    )
    assert state == states.RETRY
    assert type(info).__name__ == "PlannedFailure"
    assert str(info) == "first try"
    assert result.get(timeout=PATIENCE) == 1
    assert result.state == states.SUCCESS
