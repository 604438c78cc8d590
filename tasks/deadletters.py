"""Looking at and replaying the dead-letter queue.

Messages the workers could not process (undecodable, an unknown task, a
refused content type, or a task delivered more times than the redrive policy
allows) end in ``<task queue>-dlq``. :func:`peek` lists them without removing
them; :func:`redrive` sends them back to the queue they came from, for when the
cause is gone (a worker that did not know a task yet, say). A message that is
still bad comes back to the dead-letter queue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from config import Settings
from tasks.queues import Message, QueueService

__all__ = ["DeadLetter", "peek", "redrive"]

SOURCE_ATTRIBUTE = "cloudworker.source"
#: Seconds a peeked message stays hidden before it is visible in the queue again.
_PEEK_HIDE = 5


@dataclass(frozen=True)
class DeadLetter:
    """What a dead letter is, as far as can be read from it."""

    message_id: str
    source: str
    task: str
    task_id: str
    content_type: str
    receive_count: int
    sent_at: float
    preview: str

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def describe(message: Message, default_source: str) -> DeadLetter:
    """Read a dead letter's task name and id from its Celery envelope, if it has one."""
    headers: dict[str, Any] = {}
    content_type = ""
    try:
        envelope = json.loads(message.body)
    except ValueError:
        envelope = None
    if isinstance(envelope, dict):
        found = envelope.get("headers")
        headers = found if isinstance(found, dict) else {}
        content_type = str(envelope.get("content-type") or "")
    return DeadLetter(
        message_id=message.id,
        source=message.attributes.get(SOURCE_ATTRIBUTE, default_source),
        task=str(headers.get("task", "")),
        task_id=str(headers.get("id", "")),
        content_type=content_type,
        receive_count=int(message.attributes.get("ApproximateReceiveCount", 0)),
        sent_at=int(message.attributes.get("SentTimestamp", 0)) / 1000,
        preview=" ".join(message.body[:120].split()),
    )


def peek(queues: QueueService, settings: Settings, *, limit: int = 100) -> list[DeadLetter]:
    """Up to ``limit`` dead letters, left in the queue (hidden for a few seconds)."""
    url = queues.url_of(settings.dead_letter_queue_name)
    seen: dict[str, DeadLetter] = {}
    while len(seen) < limit:
        batch = queues.receive(url, wait_seconds=0, visibility_timeout=_PEEK_HIDE)
        fresh = [m for m in batch if m.id not in seen]
        if not fresh:
            break
        for message in fresh:
            seen[message.id] = describe(message, settings.task_queue_name)
    return list(seen.values())[:limit]


def redrive(queues: QueueService, settings: Settings, *, limit: int | None = None) -> int:
    """Send dead letters back to the queue each came from; return how many."""
    url = queues.url_of(settings.dead_letter_queue_name)
    urls: dict[str, str] = {}
    moved = 0
    while limit is None or moved < limit:
        wanted = 10 if limit is None else min(10, limit - moved)
        batch = queues.receive(url, wait_seconds=0, max_messages=wanted, visibility_timeout=30)
        if not batch:
            break
        for message in batch:
            source = message.attributes.get(SOURCE_ATTRIBUTE, settings.task_queue_name)
            if source not in urls:
                urls[source] = queues.url_of(source)
            queues.send(urls[source], message.body)
        queues.delete_messages(url, [m.receipt for m in batch])
        moved += len(batch)
    return moved
