"""SQS batch sends: ten messages, at most 256 KiB, per request (cloudworker/sqs/batch_sends.py)."""

from __future__ import annotations

from typing import Any

import pytest

from cloudworker.sqs.batch_sends import BatchSendError, SendBatch


class RecordingClient:
    def __init__(self, fail: int = 0) -> None:
        self.calls: list[tuple[str, list[dict[str, Any]]]] = []
        self.fail = fail

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append((QueueUrl, Entries))
        failed = [{"Id": e["Id"], "Code": "X", "Message": "too big"} for e in Entries[: self.fail]]
        return {"Failed": failed}


def test_ten_messages_per_request_per_queue() -> None:
    client, batch = RecordingClient(), SendBatch()
    for i in range(25):
        batch.add(client, {"QueueUrl": "q1", "MessageBody": f"m{i}"})
    batch.add(client, {"QueueUrl": "q2", "MessageBody": "other", "DelaySeconds": 5})
    batch.flush()
    sizes = [(url, len(entries)) for url, entries in client.calls]
    assert sorted(sizes) == [("q1", 5), ("q1", 10), ("q1", 10), ("q2", 1)]
    assert (batch.messages, batch.requests) == (26, 4)
    bodies = [e["MessageBody"] for url, entries in client.calls if url == "q1" for e in entries]
    assert bodies == [f"m{i}" for i in range(25)]
    assert (
        client.calls[-1][1][0]["DelaySeconds"] == 5 or client.calls[-2][1][0]["DelaySeconds"] == 5
    )


def test_a_batch_never_exceeds_256_kib() -> None:
    client, batch = RecordingClient(), SendBatch()
    for _ in range(5):
        batch.add(client, {"QueueUrl": "q", "MessageBody": "x" * 100_000})
    batch.flush()
    assert [len(entries) for _, entries in client.calls] == [2, 2, 1]


def test_refused_messages_are_an_error() -> None:
    client, batch = RecordingClient(fail=1), SendBatch()
    batch.add(client, {"QueueUrl": "q", "MessageBody": "a"})
    with pytest.raises(BatchSendError, match="1 of 1 messages were refused: too big"):
        batch.flush()
