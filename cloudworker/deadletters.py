"""Looking at and replaying the dead-letter queue.

Messages the workers could not process (undecodable, an unknown task, a
refused content type, or a task delivered more times than the redrive policy
allows) end in ``<task queue>-dlq``, with the reason the worker gave.
:func:`peek` lists them without removing them; :func:`redrive` sends them back
to the queue they came from, for when the cause is gone (a worker that did not
know a task yet, say). A message that is still bad comes back to the
dead-letter queue; redrive leaves it there, since it sends only the messages
that were dead letters before it started.

Dead letters are whatever a hostile or broken producer sent, so reading them
never trusts them: any body is described (JSON that is too deep, not JSON,
not an object, headers of any type), and a dead letter whose source is not a
queue of this deployment stays where it is.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from cloudworker.codec import check_depth
from cloudworker.errors import LimitExceeded
from cloudworker.queues import REASON_ATTRIBUTE, SOURCE_ATTRIBUTE, Message, QueueGone, QueueService
from cloudworker.settings import Settings

__all__ = ["SOURCE_ATTRIBUTE", "DeadLetter", "Redrive", "peek", "redrive"]
#: Seconds a peeked message stays hidden if the listing cannot release it.
_PEEK_HIDE = 30
#: Seconds a dead letter being redriven stays hidden (longer than one redrive pass).
_REDRIVE_HIDE = 60


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
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class Redrive:
    """What :func:`redrive` did."""

    #: Sent back to the queue they came from.
    moved: int = 0
    #: Left in the dead-letter queue: their source is not a queue of this deployment.
    kept: int = 0


def _envelope(body: str) -> dict[str, Any]:
    """The message's JSON envelope if it has one that can be read safely, else {}."""
    try:
        check_depth(body)
        envelope = json.loads(body)
    except (ValueError, LimitExceeded, RecursionError):
        return {}
    return envelope if isinstance(envelope, dict) else {}


def _text(value: Any) -> str:
    return value[:200] if isinstance(value, str) else ""


def _number(value: Any) -> int:
    return int(value) if isinstance(value, str) and value.isdigit() else 0


def describe(message: Message, default_source: str) -> DeadLetter:
    """Read a dead letter's task name and id from its Celery envelope, if it has one."""
    envelope = _envelope(message.body)
    headers = envelope.get("headers")
    if not isinstance(headers, dict):
        headers = {}
    return DeadLetter(
        message_id=message.id,
        source=message.attributes.get(SOURCE_ATTRIBUTE, default_source),
        task=_text(headers.get("task")),
        task_id=_text(headers.get("id")),
        content_type=_text(envelope.get("content-type")),
        receive_count=_number(message.attributes.get("ApproximateReceiveCount")),
        sent_at=_number(message.attributes.get("SentTimestamp")) / 1000,
        preview=" ".join(message.body[:120].split()),
        reason=message.attributes.get(REASON_ATTRIBUTE, ""),
    )


def peek(queues: QueueService, settings: Settings, *, limit: int = 100) -> list[DeadLetter]:
    """Up to ``limit`` dead letters, left in the queue.

    Each is hidden while the listing runs (so that one receive after another
    finds new ones), then made visible again, so a redrive can follow at once.
    """
    url = queues.url_of(settings.dead_letter_queue_name)
    seen: dict[str, DeadLetter] = {}
    receipts: list[str] = []
    try:
        while len(seen) < limit:
            batch = queues.receive(url, wait_seconds=0, visibility_timeout=_PEEK_HIDE)
            receipts += [m.receipt for m in batch]
            fresh = [m for m in batch if m.id not in seen]
            if not fresh:
                break
            for message in fresh:
                seen[message.id] = describe(message, settings.task_queue_name)
    finally:
        queues.release(url, receipts)
    return list(seen.values())[:limit]


def redrive(queues: QueueService, settings: Settings, *, limit: int | None = None) -> Redrive:
    """Send the dead letters back to the queue each came from.

    Only the messages in the dead-letter queue when it starts: one that a worker
    sends straight back (still bad) is left for the next look, not replayed in
    a loop. A dead letter whose source is not a queue of this deployment, or no
    longer exists, stays in the dead-letter queue.
    """
    url = queues.url_of(settings.dead_letter_queue_name)
    started_ms = int(time.time() * 1000)
    urls: dict[str, str | None] = {}
    done = Redrive()
    handled: set[str] = set()
    kept: list[str] = []
    try:
        while limit is None or done.moved < limit:
            batch = queues.receive(url, wait_seconds=0, visibility_timeout=_REDRIVE_HIDE)
            batch = [m for m in batch if m.id not in handled]
            if not batch:
                break
            moved: list[str] = []
            for message in batch:
                handled.add(message.id)
                target = None
                if _number(message.attributes.get("SentTimestamp")) <= started_ms and (
                    limit is None or done.moved + len(moved) < limit
                ):
                    target = _source_url(queues, settings, message, urls)
                if target is None:
                    kept.append(message.receipt)
                    continue
                queues.send(target, message.body)
                moved.append(message.receipt)
            if moved:
                queues.delete_messages(url, moved)
            done.moved += len(moved)
    finally:
        queues.release(url, kept)  # visible again for the next look
    done.kept = len(kept)
    return done


def _source_url(
    queues: QueueService, settings: Settings, message: Message, urls: dict[str, str | None]
) -> str | None:
    """The URL of the queue a dead letter came from, if it is one of this deployment's
    task queues (a message's source attribute is anyone's to write: never a client's
    response queue, a monitoring queue, the inbox's or a dead-letter queue)."""
    source = message.attributes.get(SOURCE_ATTRIBUTE, settings.task_queue_name)
    if source not in urls:
        urls[source] = None
        if is_task_queue(source, settings):
            with contextlib.suppress(QueueGone):
                urls[source] = queues.url_of(source)
    return urls[source]


def is_task_queue(name: str, settings: Settings) -> bool:
    """Whether SQS queue ``name`` can be one of this deployment's task queues."""
    others = (settings.response_queue_prefix, settings.receiver_queue_prefix)
    return (
        name.startswith(settings.queue_prefix)
        and not name.startswith(others)
        and name != settings.inbox_queue_name
        and not name.endswith(("-dlq", "-dlq.fifo"))
    )
