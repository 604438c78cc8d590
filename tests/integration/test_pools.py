"""Every pool takes the same receive path (#25): solo, threads, gevent and eventlet, beside prefork.

Celery runs its event loop for every pool but gevent and eventlet; under those,
kombu's synchronous receive delivered a batch whole, with none of the transport's
steps (without ``Channel._get_bulk``, the gevent and eventlet cases fail: the task due
in an hour is held, not sent back). Each pool here runs a worker of its own on a queue
of its own, and must: run a task; dead-letter one broken message alone, the
message after it still run; and send a task due in an hour back to its queue,
delayed, instead of holding it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cloudworker.application import create_app
from deploy import local
from tests.integration.conftest import ROOT, LocalStack
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

TIMEOUT = 60


def _start_worker(stack: LocalStack, queue: str, name: str, *options: str) -> int:
    """Start worker ``name`` on ``queue`` (with the test tasks); its log's offset before."""
    env = {
        **os.environ,
        **stack.env,
        "CLOUDWORKER_TASK_QUEUE": queue,
        "CLOUDWORKER_INBOX_ENABLED": "false",
        "PYTHONPATH": str(ROOT),
    }
    command = [*local.worker_command(name, 2), *options, "--include=tests.support.slow_tasks"]
    offset = local.log_size(stack.stack, name)
    local.start_process(stack.stack, name, command, env)
    return offset


def _raw(stack: LocalStack, url: str, *, eta: str | None = None) -> str:
    """Send a Celery 5 task message (plain JSON, as cloudworker sends) with boto3."""
    task_id = str(uuid.uuid4())
    headers = {"lang": "py", "task": "tests.add", "id": task_id, "root_id": task_id,
               "retries": 0, "eta": eta, "argsrepr": "(1, 1)", "kwargsrepr": "{}"}  # fmt: skip
    envelope = {
        "body": json.dumps([[1, 1], {}, {}]),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {"delivery_tag": task_id, "delivery_info": {}, "priority": 0},
    }
    stack.client("sqs").send_message(QueueUrl=url, MessageBody=json.dumps(envelope))
    return task_id


@pytest.mark.parametrize("pool", ["solo", "threads", "gevent", "eventlet"])
def test_a_pool_without_an_event_loop_takes_the_transports_receive_path(
    stack: LocalStack, pool: str
) -> None:
    queue = f"pool-{pool}-{uuid.uuid4().hex[:8]}"
    settings = dataclasses.replace(stack.settings, task_queue=queue)
    app = create_app(settings)
    name = f"{pool}-{queue}"
    offset = _start_worker(stack, queue, name, f"--pool={pool}")
    try:
        local.wait_for_log(stack.stack, name, offset, "ready.")
        assert app.send_task("tests.add", (2, 3)).get(timeout=TIMEOUT) == 5
        sqs = stack.client("sqs")
        url = sqs.get_queue_url(QueueName=settings.task_queue_name)["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="{not json")
        after = _raw(stack, url)
        assert app.AsyncResult(after).get(timeout=TIMEOUT) == 2
        dead_letters = sqs.get_queue_url(QueueName=f"{settings.task_queue_name}-dlq")["QueueUrl"]
        eventually(
            lambda: any(
                m["Body"] == "{not json"
                for m in sqs.receive_message(
                    QueueUrl=dead_letters, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                    VisibilityTimeout=0,
                ).get("Messages", [])
            ),
            timeout=TIMEOUT,
            what="the broken message in the dead-letter queue",
        )  # fmt: skip
        due = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        later = _raw(stack, url, eta=due)
        log = stack.stack.log_file(name)
        eventually(
            lambda: "sent back to" in log.read_text()[offset:],
            timeout=TIMEOUT,
            what=f"the task due in an hour ({later}) sent back delayed",
        )
        text = log.read_text()[offset:]
        assert "Traceback" not in text and "CRITICAL" not in text, text[-3000:]
    finally:
        local.stop_process(stack.stack, name)
        app.services.mailbox.close()


def test_autoscale_and_max_tasks_per_child(stack: LocalStack, tmp_path: Path) -> None:
    """``--autoscale`` and ``worker_max_tasks_per_child``: each task in a pool process of
    its own (replaced after one task), every task answered."""
    queue = f"scale-{uuid.uuid4().hex[:8]}"
    settings = dataclasses.replace(stack.settings, task_queue=queue)
    app = create_app(settings)
    name = f"autoscale-{queue}"
    offset = _start_worker(stack, queue, name, "--autoscale=3,1", "--max-tasks-per-child=1")
    markers = [tmp_path / f"run-{n}" for n in range(4)]
    try:
        local.wait_for_log(stack.stack, name, offset, "ready.")
        sent = [app.send_task("tests.slow", (0.2, str(marker))) for marker in markers]
        assert [result.get(timeout=TIMEOUT) for result in sent] == [0.2] * 4
        text = stack.stack.log_file(name).read_text()[offset:]
        assert "Traceback" not in text and "CRITICAL" not in text, text[-3000:]
    finally:
        local.stop_process(stack.stack, name)
        app.services.mailbox.close()
    pids = [marker.read_text().split()[0] for marker in markers]
    assert len(set(pids)) == 4, pids  # one pool process per task
