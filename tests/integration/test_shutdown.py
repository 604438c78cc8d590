"""Warm shutdown hands the messages a worker holds back to the others at once, never a copy.

SIGTERM goes to the worker's main process only, as systemd sends it to the worker
unit (``KillMode=mixed``, deploy/systemd/) when an instance leaves the fleet: the
running tasks finish, and what the worker received but had not started is made
visible again (``ChangeMessageVisibility`` 0) instead of staying hidden for the
long poll's 20 seconds (kombu's restore) or the visibility timeout.
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

#: Far longer than the test waits: a message left in flight would fail it.
VISIBILITY = 300
QUEUE = "shutdown"


@dataclasses.dataclass
class Fleet:
    stack: LocalStack
    app: CloudworkerCelery
    env: dict[str, str]

    def start(self, name: str) -> None:
        offset = local.log_size(self.stack.stack, name)
        command = [*local.worker_command(name, 2), "--include=tests.support.slow_tasks"]
        local.start_process(self.stack.stack, name, command, self.env)
        local.wait_for_log(self.stack.stack, name, offset, "ready.")

    def stop(self, name: str) -> None:
        local.stop_process(self.stack.stack, name)

    def messages(self) -> tuple[int, int]:
        """(visible, in flight) in the test queue."""
        sqs = self.stack.client("sqs")
        url = self.stack.queue_url(f"{self.stack.settings.queue_prefix}{QUEUE}")
        attributes = sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (
            int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        )


@pytest.fixture(scope="module")
def fleet(local_stack: LocalStack) -> Iterator[Fleet]:
    settings = dataclasses.replace(
        local_stack.settings, task_queue=QUEUE, visibility_timeout=VISIBILITY
    )
    provision(settings, sqs=local_stack.client("sqs"), s3=local_stack.client("s3"))
    env = {
        **os.environ,
        **local_stack.env,
        "CLOUDWORKER_TASK_QUEUE": QUEUE,
        "CLOUDWORKER_VISIBILITY_TIMEOUT": str(VISIBILITY),
        "CLOUDWORKER_WAIT_SECONDS": "20",  # kombu would hide restored messages this long
        "CLOUDWORKER_INBOX_ENABLED": "false",
        "PYTHONPATH": str(ROOT),
    }
    fleet = Fleet(local_stack, create_app(settings), env)
    try:
        yield fleet
    finally:
        fleet.app.services.mailbox.close()
        for name in ("down1", "down2"):
            fleet.stop(name)


def test_sigterm_hands_held_tasks_back_at_once_and_each_runs_once(
    fleet: Fleet, tmp_path: Path
) -> None:
    fleet.start("down1")
    markers = [tmp_path / f"task{n}" for n in range(10)]
    results = [fleet.app.send_task("tests.slow", args=[3, str(marker)]) for marker in markers]

    def started() -> int:
        return sum(marker.exists() for marker in markers)

    deadline = time.monotonic() + 60
    while started() < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started() == 2  # two running; the worker holds the other eight
    pid = fleet.stack.stack.pid("down1")
    assert pid is not None
    os.kill(pid, signal.SIGTERM)  # the main process only, as systemd's KillMode=mixed
    deadline = time.monotonic() + 60
    while fleet.stack.stack.pid("down1") is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fleet.stack.stack.pid("down1") is None
    # The two running tasks finished and were acknowledged; the eight held ones
    # are visible again right away: none left in flight, none copied.
    assert started() == 2
    assert fleet.messages() == (8, 0)
    fleet.start("down2")
    assert [result.get(timeout=120) for result in results] == [3] * 10
    time.sleep(3)
    assert [len(marker.read_text().split()) for marker in markers] == [1] * 10
