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
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import LocalStack
from tests.support.workers import Workers

pytestmark = pytest.mark.integration

#: Far longer than the test waits: a message left in flight would fail it.
VISIBILITY = 300
QUEUE = "shutdown"


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

    deadline = time.monotonic() + 60
    while started() < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started() == 2  # two running; the worker holds the other eight
    pid = fleet.stack.pid("down1")
    assert pid is not None
    os.kill(pid, signal.SIGTERM)  # the main process only, as systemd's KillMode=mixed
    deadline = time.monotonic() + 60
    while fleet.stack.pid("down1") is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fleet.stack.pid("down1") is None
    # The two running tasks finished and were acknowledged; the eight held ones
    # are visible again right away: none left in flight, none copied.
    assert started() == 2
    assert messages(local_stack) == (8, 0)
    fleet.start("down2", wait_ready=True)
    assert [result.get(timeout=120) for result in results] == [3] * 10
    time.sleep(3)
    assert [len(marker.read_text().split()) for marker in markers] == [1] * 10
