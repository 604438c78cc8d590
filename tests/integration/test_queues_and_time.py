"""Queues created on first use, FIFO queues, and celery beat on two hosts at once (#25).

Each test runs workers (or beat processes) of its own on queues of its own, against
the session's local stack; none of those queues is provisioned beforehand.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudworker import QueueNotProvisioned
from cloudworker.application import create_app
from deploy import local
from tests.integration.conftest import ROOT, LocalStack
from tests.support.waiting import eventually
from tests.support.workers import Workers

pytestmark = pytest.mark.integration

TIMEOUT = 60


@pytest.fixture
def on_new_queue(stack: LocalStack, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A factory of (app, workers) on a queue that does not exist yet; workers stopped after."""
    started: list[tuple[Workers, str]] = []

    def make(queue: str) -> Workers:
        settings = dataclasses.replace(stack.settings, task_queue=queue)
        env = {
            **os.environ,
            **stack.env,
            "CLOUDWORKER_TASK_QUEUE": queue,
            "CLOUDWORKER_INBOX_ENABLED": "false",
            "PYTHONPATH": str(ROOT),
        }
        workers = Workers(stack.stack, create_app(settings), env)
        return workers

    def start(workers: Workers, name: str) -> None:
        workers.start(name, wait_ready=True)
        started.append((workers, name))

    make.start = start  # type: ignore[attr-defined]
    yield make
    for workers, name in started:
        workers.close(name)


def _attributes(stack: LocalStack, name: str) -> dict[str, str]:
    sqs = stack.client("sqs")
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    found: dict[str, str] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])[
        "Attributes"
    ]
    return found


def test_a_queue_routed_to_is_created_on_first_use_with_its_dead_letter_queue(
    stack: LocalStack, on_new_queue: Any
) -> None:
    queue = f"fresh-{uuid.uuid4().hex[:8]}"
    name = stack.settings.queue_prefix + queue
    assert stack.client("sqs").list_queues(QueueNamePrefix=name).get("QueueUrls", []) == []
    workers = on_new_queue(queue)
    sent = workers.app.send_task("tests.add", (2, 3))  # the producer creates it
    on_new_queue.start(workers, f"fresh-{queue}")
    assert sent.get(timeout=TIMEOUT) == 5
    redrive = json.loads(_attributes(stack, name)["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == _attributes(stack, f"{name}-dlq")["QueueArn"]
    assert int(redrive["maxReceiveCount"]) == 5


def test_with_queue_creation_off_a_missing_queue_is_a_clear_error(stack: LocalStack) -> None:
    settings = dataclasses.replace(
        stack.settings, task_queue=f"absent-{uuid.uuid4().hex[:8]}", create_queues=False
    )
    app = create_app(settings)
    try:
        with pytest.raises(QueueNotProvisioned, match="CLOUDWORKER_CREATE_QUEUES is off"):
            app.send_task("tests.add", (1, 1))
    finally:
        app.services.mailbox.close()


def test_a_fifo_queue_keeps_the_message_group_through_a_countdown_and_a_retry(
    stack: LocalStack, on_new_queue: Any
) -> None:
    """SQS delays no single FIFO message: a countdown is held hidden by the worker until
    due; the retry, a new message, keeps its task's group (before, a re-send had none,
    and SQS refused it: the task never ran)."""
    queue = f"orders-{uuid.uuid4().hex[:8]}.fifo"
    workers = on_new_queue(queue)
    on_new_queue.start(workers, "fifo")
    app = workers.app
    plain = app.send_task("tests.add", (1, 2), MessageGroupId="tenant-1")
    later = app.send_task("tests.add", (3, 4), countdown=2, MessageGroupId="tenant-2")
    retried = app.send_task("tests.retry_in_group", (1,), MessageGroupId="tenant-3")
    assert plain.get(timeout=TIMEOUT) == 3
    assert later.get(timeout=TIMEOUT) == 7
    assert retried.get(timeout=TIMEOUT) == "tenant-3"
    log = stack.stack.log_file("fifo").read_text()
    assert "kept hidden in" in log and "until then" in log
    name = stack.settings.queue_prefix + queue
    assert _attributes(stack, name)["FifoQueue"] == "true"
    dead_letters = name.removesuffix(".fifo") + "-dlq.fifo"
    assert _attributes(stack, dead_letters)["FifoQueue"] == "true"


BEAT_APP = """
import cloudworker  # noqa: F401
from celery import Celery

app = Celery("beattest-{tag}", broker="cloudworker://")
app.conf.beat_schedule = {{
    "tick": {{"task": "beattest.tick", "schedule": 2.0, "options": {{"queue": "{queue}"}}}},
}}
"""


def test_two_beat_processes_at_once_send_each_tick_once_and_one_takes_over(
    stack: LocalStack, tmp_path: Path
) -> None:
    """Two ``celery beat`` of one app, on a 2 s schedule: the ticks come from one of
    them at a time, never twice; when that one stops, the other takes over."""
    tag = uuid.uuid4().hex[:8]
    queue = f"ticks-{tag}"
    (tmp_path / "beatapp.py").write_text(textwrap.dedent(BEAT_APP.format(tag=tag, queue=queue)))
    env = {
        **os.environ,
        **stack.env,
        "CLOUDWORKER_BEAT_LEASE": "4",
        "PYTHONPATH": os.pathsep.join((str(tmp_path), str(ROOT))),
    }
    names = [f"beat-{tag}-a", f"beat-{tag}-b"]
    for process in names:
        command = [
            sys.executable, "-m", "celery", "-A", "beatapp", "beat", "--loglevel=INFO",
            f"--schedule={tmp_path / process}",
        ]  # fmt: skip
        local.start_process(stack.stack, process, command, env, cwd=tmp_path)
    try:
        logs = {process: stack.stack.log_file(process) for process in names}

        def leader() -> str | None:
            for process, log in logs.items():
                text = log.read_text() if log.exists() else ""
                if text.count("now sends the periodic tasks") > text.count("this one waits"):
                    return process
            return None

        eventually(lambda: leader() is not None, timeout=30, what="a beat leads")
        first = leader()
        assert first is not None
        sqs, name = stack.client("sqs"), stack.settings.queue_prefix + queue
        eventually(lambda: _depth(sqs, name) >= 6, timeout=60, what="six ticks sent")
        local.stop_process(stack.stack, first)
        other = next(n for n in names if n != first)
        eventually(
            lambda: "now sends the periodic tasks" in logs[other].read_text(),
            timeout=30,
            what="the other beat took over",
        )
        settled = _depth(sqs, name)
        eventually(lambda: _depth(sqs, name) >= settled + 4, timeout=60, what="ticks go on")
    finally:
        for process in names:
            local.stop_process(stack.stack, process)
    sent = sorted(_sent_times(sqs, name))
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent)]
    # A tick sent twice (by both beats) would be two messages within a fraction of a
    # second of each other; one beat's ticks are 2 s apart, a takeover's gap longer.
    assert len(sent) >= 10, sent
    assert min(gaps) > 1.0, gaps


def _depth(sqs: Any, name: str) -> int:
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        return 0
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def _sent_times(sqs: Any, name: str) -> list[float]:
    """The send times (s) of every message in queue ``name``, received once each."""
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    times: dict[str, float] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            VisibilityTimeout=120,
            AttributeNames=["SentTimestamp"],
        ).get("Messages", [])
        if not got:
            break
        for message in got:
            times[message["MessageId"]] = int(message["Attributes"]["SentTimestamp"]) / 1000
    return list(times.values())


BACKLOG = 600


def test_a_high_priority_task_waits_behind_the_held_work_not_the_backlog(
    stack: LocalStack,
) -> None:
    """600 priority-0 tasks are queued before any worker runs; a priority-9 task sent
    once one does is run before most of them (on one queue it would run after all)."""
    from cloudworker import batch_sends

    queue = f"prio-{uuid.uuid4().hex[:8]}"
    settings = dataclasses.replace(stack.settings, task_queue=queue)
    app = create_app(settings)
    app.conf.task_queue_max_priority = 10
    with batch_sends():
        backlog = [app.send_task("tests.nap", (0.02,), priority=0) for _ in range(BACKLOG)]
    env = {**os.environ, **stack.env, "CLOUDWORKER_TASK_QUEUE": queue, "PYTHONPATH": str(ROOT)}
    name = f"prio-{queue}"
    command = local.worker_command(name, 2, "tests.support.priority_app")
    offset = local.log_size(stack.stack, name)
    local.start_process(stack.stack, name, command, env)
    try:
        local.wait_for_log(stack.stack, name, offset, "ready.")
        urgent = app.send_task("tests.nap", (0,), priority=9)
        urgent_done = urgent.get(timeout=TIMEOUT)
        finished = [result.get(timeout=TIMEOUT * 3) for result in backlog]
    finally:
        local.stop_process(stack.stack, name)
        app.services.mailbox.close()
    before = sum(1 for done in finished if done < urgent_done)
    print(f"priority-9 task: {before} of {BACKLOG} priority-0 tasks ran before it")
    assert before < BACKLOG // 2, f"{before} of {BACKLOG} ran before the priority-9 task"
    lane = _attributes(stack, f"{settings.queue_prefix}{queue}-p9")
    assert "RedrivePolicy" in lane  # a lane is a task queue like any other
