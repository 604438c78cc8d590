"""Poison messages end in the dead-letter queue: no crash, no loop, never unpickled."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import NotRegistered

from tests.integration.conftest import LocalStack

pytestmark = pytest.mark.integration


def pickle_that_touches(path: Path) -> str:
    """A protocol-0 pickle that, if anything ever loaded it, would create ``path``."""
    return base64.b64encode(f"cos\nsystem\n(S'touch {path}'\ntR.".encode()).decode()


def envelope(body: str, content_type: str, **headers: Any) -> str:
    task_id = str(uuid.uuid4())
    return json.dumps(
        {
            "body": body,
            "content-encoding": "utf-8" if content_type.endswith("json") else "binary",
            "content-type": content_type,
            "headers": {"lang": "py", "task": "tasks.compute_stats", "id": task_id, **headers},
            "properties": {
                "correlation_id": task_id,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": "tasks"},
                "priority": 0,
                "body_encoding": None if content_type.endswith("json") else "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )


@pytest.fixture
def empty_dlq(stack: LocalStack) -> str:
    """The dead-letter queue, emptied (PurgeQueue is allowed once a minute only)."""
    sqs, name = stack.client("sqs"), stack.settings.dead_letter_queue_name
    url, deadline = stack.queue_url(name), time.monotonic() + 30
    while stack.queue_depth(name) and time.monotonic() < deadline:  # peeked ones come back
        response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in response.get("Messages", []):
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert stack.queue_depth(name) == 0
    return name


def test_poison_messages_end_in_the_dead_letter_queue(
    stack: LocalStack, empty_dlq: str, tmp_path: Path
) -> None:
    sqs, queue = stack.client("sqs"), stack.queue_url(stack.settings.task_queue_name)
    pwned = tmp_path / "unpickled"
    poison = {
        "not JSON at all": "this is not json {",
        "JSON body that does not decode": envelope("[[1, 2], {}, {", "application/json"),
        "pickle": envelope(pickle_that_touches(pwned), "application/x-python-serialize"),
    }
    for body in poison.values():
        sqs.send_message(QueueUrl=queue, MessageBody=body)
    unknown = stack.app.send_task("tasks.does_not_exist", args=[1])
    with pytest.raises(NotRegistered):
        unknown.get(timeout=60)

    assert stack.wait_for_depth(empty_dlq, 4)
    assert stack.wait_for_depth(stack.settings.task_queue_name, 0)
    assert stack.worker_alive()
    assert not pwned.exists()  # the pickle was never loaded

    listed = stack.cli("dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    letters = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {letter["source"] for letter in letters} == {stack.settings.task_queue_name}
    assert {letter["content_type"] for letter in letters} == {
        "",
        "application/json",
        "application/x-python-serialize",
    }
    assert {letter["task"] for letter in letters} == {
        "",
        "tasks.compute_stats",
        "tasks.does_not_exist",
    }
    assert any(letter["preview"].startswith("this is not json") for letter in letters)
    # The worker goes on serving.
    assert stack.tasks.compute_stats.delay([1, 3]).get(timeout=60)["median"] == 2


def test_redrive_replays_dead_letters(stack: LocalStack, empty_dlq: str) -> None:
    """A message parked in the dead-letter queue is processed once sent back."""
    sqs = stack.client("sqs")
    parked = f"{stack.settings.queue_prefix}parked"
    parked_url = sqs.create_queue(QueueName=parked)["QueueUrl"]
    settings = stack.settings
    result = stack.tasks.compute_stats.apply_async(([4, 5, 6],), queue="parked")
    (message,) = sqs.receive_message(QueueUrl=parked_url, WaitTimeSeconds=5)["Messages"]
    body = json.loads(message["Body"])
    body["properties"]["delivery_info"]["routing_key"] = settings.task_queue
    sqs.send_message(
        QueueUrl=stack.queue_url(empty_dlq),
        MessageBody=json.dumps(body),
        MessageAttributes={
            "cloudworker.source": {"DataType": "String", "StringValue": settings.task_queue_name}
        },
    )
    out = stack.cli("dlq", "redrive")
    assert (out.returncode, out.stdout.strip()) == (0, "sent 1 dead letter(s) back to their queue")
    assert result.get(timeout=60)["median"] == 5
    assert stack.wait_for_depth(empty_dlq, 0)
