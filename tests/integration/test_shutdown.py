"""Warm shutdown hands the messages a worker holds back to the others at once, never a copy.

SIGTERM goes to the worker's main process only, as systemd sends it to the worker
unit (``KillMode=mixed``, deploy/systemd/) when an instance leaves the fleet: the
running tasks finish, and what the worker received but had not started is made
visible again (``ChangeMessageVisibility`` 0) instead of staying hidden for the
long poll's 20 seconds (kombu's restore) or the visibility timeout.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import LocalStack
from tests.support.waiting import eventually
from tests.support.workers import Workers

pytestmark = pytest.mark.integration

#: Far longer than the test waits: a message left in flight would fail it.
VISIBILITY = 300
QUEUE = "shutdown"
#: For the second workers, which only finish what the first handed back: a stopping
#: worker waits for its long poll, and theirs need not be the 20 s under test.
SHORT_POLL = {"CLOUDWORKER_WAIT_SECONDS": "2"}


def messages(stack: LocalStack) -> tuple[int, int]:
    """(visible, in flight) in the test queue."""
    url = stack.queue_url(f"{stack.settings.queue_prefix}{QUEUE}")
    counts = stack.client("sqs").get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(counts["ApproximateNumberOfMessages"]),
        int(counts["ApproximateNumberOfMessagesNotVisible"]),
    )


@pytest.fixture(scope="module")
def fleet(local_stack: LocalStack) -> Iterator[Workers]:
    # A long poll of 20 s: what kombu's own restore would hide a held message for.
    workers = Workers.on_queue(local_stack, QUEUE, visibility=VISIBILITY, wait_seconds=20)
    try:
        yield workers
    finally:
        workers.close("down1", "down2")


def test_sigterm_hands_held_tasks_back_at_once_and_each_runs_once(
    fleet: Workers, local_stack: LocalStack, tmp_path: Path
) -> None:
    fleet.start("down1", wait_ready=True)
    markers = [tmp_path / f"task{n}" for n in range(10)]
    results = [fleet.app.send_task("tests.slow", args=[3, str(marker)]) for marker in markers]

    def started() -> int:
        return sum(marker.exists() for marker in markers)

    eventually(lambda: started() >= 2, what="two tasks started")
    assert started() == 2  # two running; the worker holds the other eight
    pid = fleet.stack.pid("down1")
    assert pid is not None
    os.kill(pid, signal.SIGTERM)  # the main process only, as systemd's KillMode=mixed
    eventually(lambda: fleet.stack.pid("down1") is None, what="down1 stopped")
    # The two running tasks finished and were acknowledged; the eight held ones
    # are visible again right away: none left in flight, none copied.
    assert started() == 2
    assert messages(local_stack) == (8, 0)
    fleet.start("down2", wait_ready=True, env=SHORT_POLL)
    try:
        assert [result.get(timeout=120) for result in results] == [3] * 10
    finally:
        fleet.stop("down2")
    assert local_stack.wait_for_depth(fleet.app.services.settings.task_queue_name, 0)
    assert [len(marker.read_text().split()) for marker in markers] == [1] * 10


def lines(path: Path) -> int:
    return len(path.read_text().split()) if path.exists() else 0


def test_tasks_running_when_the_grace_period_ends_are_handed_back_at_once(
    fleet: Workers, local_stack: LocalStack, tmp_path: Path
) -> None:
    fleet.start("grace1", wait_ready=True, env={"CLOUDWORKER_SHUTDOWN_GRACE": "2"})
    markers = [tmp_path / f"task{n}" for n in range(2)]
    finished = [tmp_path / f"finished{n}" for n in range(2)]
    # Far longer than the grace period on the first run; quick when run again.
    results = [
        fleet.app.send_task("tests.slow", args=[600, str(marker), str(done)], kwargs={"again": 0.5})
        for marker, done in zip(markers, finished, strict=True)
    ]
    eventually(lambda: sum(lines(marker) for marker in markers) == 2, what="two tasks started")
    pid = fleet.stack.pid("grace1")
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    eventually(lambda: fleet.stack.pid("grace1") is None, what="grace1 stopped")
    # Both were cut short after the grace period and are visible again at once,
    # not after the 300 s visibility timeout.
    assert [lines(done) for done in finished] == [0, 0]
    assert messages(local_stack) == (2, 0)
    log = local_stack.stack.log_file("grace1").read_text()
    assert "shutdown grace of 2 s is over: handing back 2 running task(s)" in log
    fleet.start("grace2", wait_ready=True, env=SHORT_POLL)
    try:
        assert [result.get(timeout=60) for result in results] == [600, 600]
    finally:
        fleet.stop("grace2")
    # Each started twice (cut short, then run again) and finished once.
    assert [lines(marker) for marker in markers] == [2, 2]
    assert [lines(done) for done in finished] == [1, 1]


@pytest.fixture(scope="module")
def short_fleet(local_stack: LocalStack) -> Iterator[Workers]:
    # A visibility timeout far shorter than the tasks: only the extension keeps
    # their messages from a second worker.
    workers = Workers.on_queue(local_stack, "shutdown-short", visibility=3, wait_seconds=1)
    try:
        yield workers
    finally:
        workers.close("short1", "short2")


def test_running_tasks_stay_hidden_while_they_finish_in_the_grace_period(
    short_fleet: Workers, local_stack: LocalStack, tmp_path: Path
) -> None:
    short_fleet.start("short1", wait_ready=True, env={"CLOUDWORKER_SHUTDOWN_GRACE": "60"})
    markers = [tmp_path / f"task{n}" for n in range(6)]
    finished = [tmp_path / f"finished{n}" for n in range(6)]
    results = [
        short_fleet.app.send_task("tests.slow", args=[8, str(marker), str(done)])
        for marker, done in zip(markers, finished, strict=True)
    ]
    eventually(lambda: sum(lines(marker) for marker in markers) == 2, what="two tasks started")
    pid = short_fleet.stack.pid("short1")
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    # A second worker is already receiving while the first finishes its two tasks
    # (8 s each, well past the 3 s visibility timeout) and hands back the other four.
    short_fleet.start("short2", wait_ready=True)
    assert [result.get(timeout=120) for result in results] == [8] * 6
    eventually(lambda: short_fleet.stack.pid("short1") is None, what="short1 stopped")
    # Every message deleted: nothing can come back after another visibility timeout.
    assert local_stack.wait_for_depth(short_fleet.app.services.settings.task_queue_name, 0)
    assert [lines(marker) for marker in markers] == [1] * 6
    assert [lines(done) for done in finished] == [1] * 6
