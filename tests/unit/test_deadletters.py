"""Reading and replaying dead letters, whatever they hold (on the in-memory queue stub)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from cloudworker.deadletters import describe, peek, redrive
from cloudworker.queues import MemoryQueueService, Message
from cloudworker.settings import Settings

SETTINGS = Settings(queue_prefix="cw-")
SOURCE = SETTINGS.task_queue_name


def letter(body: str, **attributes: str) -> Message:
    return Message(body, "r", "m1", {"cloudworker.source": SOURCE, **attributes})


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000 + "]" * 100_000,
        "[" * 100_000,
        "not json {",
        '"a string"',
        "[1, 2]",
        '{"headers": [1], "content-type": 5}',
        '{"headers": {"task": ["x"], "id": 7}}',
        "1" * 5000,
        "",
    ],
)
def test_any_body_is_described(body: str) -> None:
    described = describe(letter(body, **{"cloudworker.reason": "why"}), SOURCE)
    assert (described.task, described.task_id, described.content_type) == ("", "", "")
    assert described.reason == "why"
    assert described.preview == " ".join(body[:120].split())
    json.dumps(described.to_json())


def test_a_celery_message_is_described() -> None:
    body = json.dumps(
        {"headers": {"task": "tasks.compute_stats", "id": "t1"}, "content-type": "application/json"}
    )
    described = describe(Message(body, "r", "m1", {"ApproximateReceiveCount": "3"}), SOURCE)
    assert (described.task, described.task_id, described.receive_count) == (
        "tasks.compute_stats",
        "t1",
        3,
    )
    assert (described.source, described.reason) == (SOURCE, "")


class DeadLetterQueue(MemoryQueueService):
    """A memory queue whose dead letters carry attributes, with sends recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[Message] = []
        self.sent: list[tuple[str, str]] = []
        self.released: list[str] = []
        for name in (
            SOURCE,
            SETTINGS.dead_letter_queue_name,
            "cw-other",
            f"{SETTINGS.response_queue_prefix}0123456789abcdef",
            f"{SETTINGS.receiver_queue_prefix}events-1",
            SETTINGS.inbox_queue_name,
        ):
            self.create(name, attributes={}, tags={})

    def receive(self, url: str, **_: Any) -> list[Message]:
        batch, self.waiting = self.waiting[:10], self.waiting[10:]
        return batch

    def send(self, url: str, body: str) -> None:
        self.sent.append((url, body))

    def release(self, url: str, receipts: Sequence[str]) -> None:
        self.released += receipts


def dead(body: str, source: str = SOURCE, sent_ms: int = 1, **more: str) -> Message:
    attributes: Mapping[str, str] = {
        "cloudworker.source": source,
        "SentTimestamp": str(sent_ms),
        **more,
    }
    return Message(body, f"receipt-{body}", f"id-{body}", attributes)


def test_redrive_sends_letters_home_and_keeps_what_it_cannot_place() -> None:
    queues = DeadLetterQueue()
    queues.waiting = [
        dead("a"),
        dead("b", source="cw-other"),
        dead("c", source="someone-elses-queue"),
        dead("d", source="cw-gone"),
        dead("e", source=SETTINGS.dead_letter_queue_name),
        # Queues of this deployment that are not task queues: a forged source attribute
        # sent a letter into a client's response queue.
        dead("f", source=f"{SETTINGS.response_queue_prefix}0123456789abcdef"),
        dead("g", source=f"{SETTINGS.receiver_queue_prefix}events-1"),
        dead("h", source=SETTINGS.inbox_queue_name),
    ]
    done = redrive(queues, SETTINGS)
    assert (done.moved, done.kept) == (2, 6)
    assert queues.sent == [("memory://cw-tasks", "a"), ("memory://cw-other", "b")]
    assert queues.released == [f"receipt-{x}" for x in "cdefgh"]


def test_redrive_replays_only_what_was_there_when_it_started() -> None:
    queues = DeadLetterQueue()
    later = 10**15  # sent after redrive started: a letter that bounced straight back
    queues.waiting = [dead("old"), dead("bounced", sent_ms=later)]
    done = redrive(queues, SETTINGS)
    assert (done.moved, done.kept) == (1, 1)
    assert queues.sent == [("memory://cw-tasks", "old")]


def test_redrive_stops_at_its_limit() -> None:
    queues = DeadLetterQueue()
    queues.waiting = [dead(str(n)) for n in range(15)]
    assert redrive(queues, SETTINGS, limit=12).moved == 12
    assert len(queues.sent) == 12


def test_peek_makes_what_it_looked_at_visible_again() -> None:
    queues = DeadLetterQueue()
    queues.waiting = [dead("x"), dead("[" * 50_000)]
    letters = peek(queues, SETTINGS)
    assert [letter.preview[:1] for letter in letters] == ["x", "["]
    assert queues.released == ["receipt-x", "receipt-" + "[" * 50_000]
