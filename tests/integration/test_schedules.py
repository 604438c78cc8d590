"""A beat_schedule without celery beat: EventBridge Scheduler schedules sending to SQS.

``python -m deploy schedules`` makes one schedule per entry; each firing sends the
entry's task message to its queue, and a worker runs it under a task id of its
own (``<schedule>-<SQS message id>``). moto's Scheduler keeps schedules but never
fires them; ministack fires them (a 10 s tick), so the firing test runs there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.endpoints import ENDPOINT_VARIABLE, chosen
from deploy.schedules import entries, group_name
from tests.integration.conftest import ROOT, LocalStack
from tests.support.waiting import eventually
from tests.support.workers import Workers

pytestmark = pytest.mark.integration

QUEUE = "scheduled"
WORKER = "scheduled1"
ROLE = "arn:aws:iam::123456789012:role/cloudworker-scheduler"
#: A user's app: the fleet's settings from the environment, one entry a minute.
APP = """\
import os
from cloudworker.application import create_app
from cloudworker.settings import load

app = create_app(load())
app.conf.beat_schedule = {
    "tick every minute": {
        "task": "tests.record",
        "schedule": 60.0,
        "args": [[1], os.environ["MARKER"]],
    },
}
"""


@pytest.fixture(scope="module")
def fleet(local_stack: LocalStack) -> Iterator[Workers]:
    workers = Workers.on_queue(local_stack, QUEUE, visibility=60, wait_seconds=1)
    workers.start(WORKER, wait_ready=True)
    try:
        yield workers
    finally:
        workers.close(WORKER)


def runs(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def schedules_cli(fleet: Workers, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "beatapp.py").write_text(APP)
    env = {**fleet.env, "MARKER": str(tmp_path / "ticks"), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "deploy", "schedules", "--app", "beatapp", "--role-arn", ROLE,
         *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_each_message_a_schedule_sends_runs_as_a_task_of_its_own(
    fleet: Workers, local_stack: LocalStack, tmp_path: Path
) -> None:
    """What EventBridge does at each firing, done twice by hand: the same message, sent."""
    marker = tmp_path / "ticks"
    fleet.app.conf.beat_schedule = {
        "tick": {"task": "tests.record", "schedule": 60, "args": [[1], str(marker)]}
    }
    (entry,) = entries(fleet.app)
    sqs = local_stack.client("sqs")
    url = sqs.get_queue_url(QueueName=fleet.app.services.settings.task_queue_name)["QueueUrl"]
    sent = [sqs.send_message(QueueUrl=url, MessageBody=entry.body)["MessageId"] for _ in (1, 2)]
    done = [f"tests.record[tick-{message_id}] succeeded" for message_id in sent]
    eventually(
        lambda: all(line in local_stack.worker_log(WORKER) for line in done),
        timeout=60,
        what=lambda: (
            f"each message ran as tick-<its SQS id> ({runs(marker)} runs): "
            + local_stack.worker_log(WORKER)[-3000:]
        ),
    )
    assert runs(marker) == 2
    assert fleet.app.AsyncResult(f"tick-{sent[0]}").get(timeout=30) == [1]


def test_the_cli_makes_a_schedule_per_entry_and_removes_them(
    fleet: Workers, local_stack: LocalStack, tmp_path: Path
) -> None:
    made = schedules_cli(fleet, tmp_path)
    assert made.returncode == 0, made.stderr
    group = group_name(fleet.app.services.settings)
    assert made.stdout == f"schedule {group}/tick-every-minute: rate(1 minute) -> {QUEUE}\n"
    scheduler = local_stack.client("scheduler")
    found = scheduler.get_schedule(Name="tick-every-minute", GroupName=group)
    assert found["ScheduleExpression"] == "rate(1 minute)"
    assert found["Target"]["RoleArn"] == ROLE
    assert found["Target"]["Arn"].endswith(f":{fleet.app.services.settings.task_queue_name}")
    assert '"cloudworker_schedule":"tick-every-minute"' in found["Target"]["Input"]
    again = schedules_cli(fleet, tmp_path)  # a second sync updates, never duplicates
    assert again.returncode == 0, again.stderr
    listed = scheduler.list_schedules(GroupName=group)["Schedules"]
    assert [s["Name"] for s in listed] == ["tick-every-minute"]
    removed = schedules_cli(fleet, tmp_path, "--remove")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout == f"deleted schedule {group}/tick-every-minute\n", removed.stderr
    assert scheduler.list_schedules(GroupName=group)["Schedules"] == []


@pytest.mark.skipif(
    chosen(os.environ).name != "ministack",
    reason=f"moto's EventBridge Scheduler does not fire ({ENDPOINT_VARIABLE}=ministack does)",
)
def test_a_schedule_fires_every_minute_and_each_firing_runs_once(
    fleet: Workers, local_stack: LocalStack, tmp_path: Path
) -> None:
    marker = tmp_path / "ticks"

    def fired() -> set[str]:
        """The task ids of the firings that ran, from the worker's log."""
        return {
            line.split("tests.record[", 1)[1].split("]", 1)[0]
            for line in local_stack.worker_log(WORKER).splitlines()
            if "tests.record[tick-every-minute-" in line and "succeeded" in line
        }

    made = schedules_cli(fleet, tmp_path)
    assert made.returncode == 0, made.stderr
    try:
        # rate(1 minute), counted from the schedule's creation; ministack looks every 10 s.
        eventually(lambda: len(fired()) >= 2, timeout=200, interval=1, what="two firings ran")
    finally:
        removed = schedules_cli(fleet, tmp_path, "--remove")
        assert removed.returncode == 0, removed.stderr
    assert len(fired()) == runs(marker) >= 2  # a task of its own per firing, each run once
