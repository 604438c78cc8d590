"""Queues for small messages: a small interface over SQS, and its vocabulary.

Celery's own task traffic goes through kombu's SQS transport; this interface is
for what cloudworker does beside it: the clients' response queues, the notices
workers send to them, monitoring receivers' queues, dead letters, and reaping
abandoned queues. :class:`SQSQueueService` is the real one;
:class:`MemoryQueueService` is the stub for unit tests.

The SQS words every part of cloudworker shares live here too: the tags of a
queue one process owns (:class:`OwnedQueue`), the attributes of a dead letter,
the error codes of a queue that does not exist, and SQS's batches of ten.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from cloudworker.errors import BatchSendError, QueueGone, QueueNotProvisioned
from cloudworker.settings import dead_letter_name

__all__ = [
    "BATCH",
    "BATCH_BYTES",
    "CREATED_TAG",
    "DELETED_ELSEWHERE",
    "GONE_CODES",
    "MAX_RECEIVE_COUNT",
    "PURGE_IN_PROGRESS_CODES",
    "REASON_ATTRIBUTE",
    "REASON_KEY",
    "SEEN_TAG",
    "SOURCE_ATTRIBUTE",
    "MemoryQueueService",
    "Message",
    "OwnedQueue",
    "QueueGone",
    "QueueService",
    "SQSQueueService",
    "batches",
    "body_batches",
    "create_task_queue",
    "dead_letter_name",
    "is_gone",
    "is_purge_in_progress",
    "name_of",
    "receipt_entries",
    "task_queue_attributes",
    "valid_task_queue_name",
]

#: Receives of a task message before SQS moves it to its queue's dead-letter queue.
MAX_RECEIVE_COUNT = 5
#: A task queue's name that SQS takes, and its dead-letter queue's too (4 more characters).
_TASK_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,76}|[A-Za-z0-9_-]{1,71}\.fifo")
#: Seconds a dead letter is kept (SQS's longest: 14 days).
DEAD_LETTER_RETENTION = 1_209_600

#: Tag of a queue one process owns: when it was created (epoch seconds).
CREATED_TAG = "cloudworker:created"
#: Tag of a queue one process owns: when it was last used (epoch seconds).
SEEN_TAG = "cloudworker:seen"
#: Set in a received message's ``delivery_info`` when its acknowledgement is only to
#: take it out of the consumer's prefetch window: another process deletes it from
#: SQS (:mod:`cloudworker.results.finishing`).
DELETED_ELSEWHERE = "cloudworker_deleted_elsewhere"
#: Most entries SQS takes in one batch request (send, delete, change visibility).
BATCH = 10
#: Most bytes of message bodies one SendMessageBatch (or SNS PublishBatch) takes, on
#: queues created before 2025 (later ones take 1 MiB).
BATCH_BYTES = 256 * 1024

T = TypeVar("T")


def valid_task_queue_name(name: str) -> bool:
    """Whether SQS takes ``name`` for a task queue, with room for its dead-letter queue."""
    return _TASK_QUEUE_NAME.fullmatch(name) is not None


def batches(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """``items`` in SQS batches of :data:`BATCH`."""
    for start in range(0, len(items), BATCH):
        yield items[start : start + BATCH]


def body_batches(bodies: Sequence[str]) -> Iterator[Sequence[str]]:
    """``bodies`` in send batches: at most :data:`BATCH` and :data:`BATCH_BYTES` each."""
    start, size = 0, 0
    for end, body in enumerate(bodies):
        if end > start and (end - start == BATCH or size + len(body) > BATCH_BYTES):
            yield bodies[start:end]
            start, size = end, 0
        size += len(body)
    if start < len(bodies):
        yield bodies[start:]


def receipt_entries(receipts: Sequence[str], **extra: Any) -> list[dict[str, Any]]:
    """Batch-request entries for receipt handles (``Id`` is the position)."""
    return [{"Id": str(i), "ReceiptHandle": r, **extra} for i, r in enumerate(receipts)]


@dataclass(frozen=True)
class Message:
    """One received message: its text, the handle that deletes it, and what SQS says of it."""

    body: str
    receipt: str
    id: str = ""
    #: Message attributes (string values) and SentTimestamp / ApproximateReceiveCount.
    attributes: Mapping[str, str] = field(default_factory=dict)


class QueueService(ABC):
    """Named queues of text messages, addressed by URL once resolved."""

    @abstractmethod
    def create(self, name: str, *, attributes: Mapping[str, str], tags: Mapping[str, str]) -> str:
        """Create queue ``name`` (idempotent) and return its URL."""

    @abstractmethod
    def url_of(self, name: str) -> str:
        """The URL of queue ``name``; :class:`QueueGone` when it does not exist."""

    @abstractmethod
    def send(self, url: str, body: str) -> None:
        """Send one message; :class:`QueueGone` when the queue does not exist."""

    def send_many(self, url: str, bodies: Sequence[str]) -> None:
        """Send several messages in as few requests as SQS takes them."""
        for body in bodies:
            self.send(url, body)

    @abstractmethod
    def receive(
        self,
        url: str,
        *,
        wait_seconds: float,
        max_messages: int = 10,
        visibility_timeout: int | None = None,
    ) -> list[Message]:
        """Long-poll for up to ``max_messages``; :class:`QueueGone` if the queue is gone.

        ``visibility_timeout`` overrides the queue's for the messages received.
        """

    @abstractmethod
    def delete_messages(self, url: str, receipts: Sequence[str]) -> None:
        """Delete received messages by their receipts."""

    @abstractmethod
    def release(self, url: str, receipts: Sequence[str]) -> None:
        """Make received messages visible again at once (they were only looked at)."""

    @abstractmethod
    def delete_queue(self, url: str) -> None:
        """Delete the queue; deleting a missing queue is not an error."""

    @abstractmethod
    def list_urls(self, prefix: str) -> list[str]:
        """URLs of the queues whose names start with ``prefix``."""

    @abstractmethod
    def tags(self, url: str) -> dict[str, str]:
        """The queue's tags; :class:`QueueGone` when it does not exist."""

    @abstractmethod
    def tag(self, url: str, tags: Mapping[str, str]) -> None:
        """Add or replace tags; :class:`QueueGone` when the queue does not exist."""


def name_of(url: str) -> str:
    """The queue name at the end of a queue URL."""
    return url.rstrip("/").rsplit("/", 1)[-1]


#: Message attribute of a dead letter: the queue it was moved from.
SOURCE_ATTRIBUTE = "cloudworker.source"
#: Message attribute of a dead letter: why the worker refused it.
REASON_ATTRIBUTE = "cloudworker.reason"
#: Key of a received message's kombu ``delivery_info`` where the consumer leaves
#: the reason it rejects the message for, for the transport to dead-letter it with.
REASON_KEY = "cloudworker_reason"

#: Error codes SQS answers for a queue that does not exist (JSON and query protocols).
GONE_CODES = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
)


def is_gone(exc: ClientError) -> bool:
    """Whether SQS answered ``exc`` because the queue does not exist."""
    return _has_code(exc, GONE_CODES)


#: Error codes SQS answers a PurgeQueue within 60 s of the last one on that queue.
PURGE_IN_PROGRESS_CODES = frozenset(
    {"AWS.SimpleQueueService.PurgeQueueInProgress", "PurgeQueueInProgress"}
)


def is_purge_in_progress(exc: ClientError) -> bool:
    """Whether SQS refused a PurgeQueue because the queue was purged less than 60 s ago."""
    return _has_code(exc, PURGE_IN_PROGRESS_CODES)


def _has_code(exc: ClientError, codes: frozenset[str]) -> bool:
    error = exc.response.get("Error", {})
    return error.get("Code") in codes or error.get("QueryErrorCode") in codes


def _message(raw: Mapping[str, Any]) -> Message:
    attributes = {
        name: str(value.get("StringValue", ""))
        for name, value in (raw.get("MessageAttributes") or {}).items()
    }
    attributes.update(raw.get("Attributes") or {})
    return Message(raw["Body"], raw["ReceiptHandle"], raw.get("MessageId", ""), attributes)


class SQSQueueService(QueueService):
    """A :class:`QueueService` on Amazon SQS through a boto3 client."""

    def __init__(self, sqs: Any, *, kms_key: str = "") -> None:
        self._sqs = sqs
        #: Attributes every queue this service creates gets: encryption under the chosen key.
        self._encryption = {"KmsMasterKeyId": kms_key} if kms_key else {}

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._sqs, operation)(**kwargs)
        except ClientError as exc:
            if is_gone(exc):
                raise QueueGone(kwargs.get("QueueUrl") or kwargs.get("QueueName")) from exc
            raise

    def create(self, name: str, *, attributes: Mapping[str, str], tags: Mapping[str, str]) -> str:
        response = self._call(
            "create_queue",
            QueueName=name,
            Attributes={**attributes, **self._encryption},
            tags=dict(tags),
        )
        url: str = response["QueueUrl"]
        return url

    def url_of(self, name: str) -> str:
        url: str = self._call("get_queue_url", QueueName=name)["QueueUrl"]
        return url

    def send(self, url: str, body: str) -> None:
        self._call("send_message", QueueUrl=url, MessageBody=body)

    def send_many(self, url: str, bodies: Sequence[str]) -> None:
        if len(bodies) == 1:
            self.send(url, bodies[0])
            return
        for batch in body_batches(bodies):
            entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(batch)]
            failed = self._call("send_message_batch", QueueUrl=url, Entries=entries).get("Failed")
            if failed:
                reasons = sorted({f.get("Message") or f.get("Code", "?") for f in failed})
                raise BatchSendError(
                    f"{len(failed)} of {len(entries)} messages were refused: {'; '.join(reasons)}"
                )

    def receive(
        self,
        url: str,
        *,
        wait_seconds: float,
        max_messages: int = 10,
        visibility_timeout: int | None = None,
    ) -> list[Message]:
        extra: dict[str, Any] = {}
        if visibility_timeout is not None:
            extra["VisibilityTimeout"] = visibility_timeout
        response = self._call(
            "receive_message",
            QueueUrl=url,
            WaitTimeSeconds=max(0, min(20, int(wait_seconds))),
            MaxNumberOfMessages=max(1, min(10, max_messages)),
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
            **extra,
        )
        return [_message(m) for m in response.get("Messages", [])]

    def delete_messages(self, url: str, receipts: Sequence[str]) -> None:
        for batch in batches(receipts):
            self._call("delete_message_batch", QueueUrl=url, Entries=receipt_entries(batch))

    def release(self, url: str, receipts: Sequence[str]) -> None:
        for batch in batches(receipts):
            entries = receipt_entries(batch, VisibilityTimeout=0)
            self._call("change_message_visibility_batch", QueueUrl=url, Entries=entries)

    def delete_queue(self, url: str) -> None:
        with contextlib.suppress(QueueGone):
            self._call("delete_queue", QueueUrl=url)

    def list_urls(self, prefix: str) -> list[str]:
        pages = self._sqs.get_paginator("list_queues").paginate(
            QueueNamePrefix=prefix, PaginationConfig={"PageSize": 1000}
        )
        return [url for page in pages for url in page.get("QueueUrls", [])]

    def tags(self, url: str) -> dict[str, str]:
        found: dict[str, str] = self._call("list_queue_tags", QueueUrl=url).get("Tags", {})
        return found

    def tag(self, url: str, tags: Mapping[str, str]) -> None:
        self._call("tag_queue", QueueUrl=url, Tags=dict(tags))


@dataclass
class OwnedQueue:
    """A queue that belongs to one process: a client's response queue, a receiver's.

    SQS has no auto-delete, so such a queue is tagged when it is created and
    tagged again, now and then, while its process uses it; the reaper
    (:mod:`cloudworker.worker.reaper`) deletes the ones whose process stopped doing so.
    """

    url: str
    #: When it was last tagged as in use (epoch seconds).
    touched: float

    @classmethod
    def create(cls, queues: QueueService, name: str, *, retention: int) -> OwnedQueue:
        """Create queue ``name`` (idempotent), tagged as created and used now."""
        now = time.time()
        url = queues.create(
            name,
            attributes={"MessageRetentionPeriod": str(retention), "VisibilityTimeout": "30"},
            tags={CREATED_TAG: str(int(now)), SEEN_TAG: str(int(now))},
        )
        return cls(url, now)

    def touch(self, queues: QueueService, *, every: float) -> None:
        """Tag the queue as in use if it was last tagged ``every`` seconds ago or more.

        Raises :class:`QueueGone` when the queue was deleted (reaped) meanwhile.
        """
        now = time.time()
        if now - self.touched >= every:
            queues.tag(self.url, {SEEN_TAG: str(int(now))})
            self.touched = now


@dataclass
class _MemoryQueue:
    tags: dict[str, str]
    messages: deque[str] = field(default_factory=deque)


class MemoryQueueService(QueueService):
    """An in-process :class:`QueueService` for unit tests (no visibility timeouts)."""

    def __init__(self) -> None:
        self.queues: dict[str, _MemoryQueue] = {}
        self._ready = threading.Condition()

    def _get(self, url: str) -> _MemoryQueue:
        try:
            return self.queues[name_of(url)]
        except KeyError:
            raise QueueGone(url) from None

    def create(self, name: str, *, attributes: Mapping[str, str], tags: Mapping[str, str]) -> str:
        with self._ready:
            self.queues.setdefault(name, _MemoryQueue(dict(tags)))
        return f"memory://{name}"

    def url_of(self, name: str) -> str:
        if name not in self.queues:
            raise QueueGone(name)
        return f"memory://{name}"

    def send(self, url: str, body: str) -> None:
        with self._ready:
            self._get(url).messages.append(body)
            self._ready.notify_all()

    def receive(
        self,
        url: str,
        *,
        wait_seconds: float,
        max_messages: int = 10,
        visibility_timeout: int | None = None,
    ) -> list[Message]:
        deadline = time.monotonic() + wait_seconds
        with self._ready:
            queue = self._get(url)
            while not queue.messages and time.monotonic() < deadline:
                self._ready.wait(deadline - time.monotonic())
                queue = self._get(url)
            count = min(max_messages, len(queue.messages))
            return [Message(queue.messages.popleft(), "done") for _ in range(count)]

    def delete_messages(self, url: str, receipts: Sequence[str]) -> None:
        self._get(url)

    def release(self, url: str, receipts: Sequence[str]) -> None:
        self._get(url)  # received messages are gone from a memory queue

    def delete_queue(self, url: str) -> None:
        with self._ready:
            self.queues.pop(name_of(url), None)
            self._ready.notify_all()

    def list_urls(self, prefix: str) -> list[str]:
        return [f"memory://{name}" for name in self.queues if name.startswith(prefix)]

    def tags(self, url: str) -> dict[str, str]:
        return dict(self._get(url).tags)

    def tag(self, url: str, tags: Mapping[str, str]) -> None:
        self._get(url).tags.update(tags)


# -- task queues ---------------------------------------------------------------------------


def task_queue_attributes(
    *, visibility_timeout: int, wait_seconds: int, dead_letter_arn: str, fifo: bool = False
) -> dict[str, str]:
    """The attributes of a task queue, whoever creates it (provisioning, or its first use)."""
    redrive = {"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
    return {
        "VisibilityTimeout": str(visibility_timeout),
        "ReceiveMessageWaitTimeSeconds": str(wait_seconds),
        "RedrivePolicy": json.dumps(redrive),
        **({"FifoQueue": "true"} if fifo else {}),
    }


def create_task_queue(
    sqs: Any, name: str, *, visibility_timeout: int, wait_seconds: int, kms_key: str = ""
) -> str:
    """Create task queue ``name`` with its dead-letter queue and redrive policy; its URL.

    A FIFO queue (``.fifo``) gets a FIFO dead-letter queue, as SQS requires.
    Idempotent, as SQS's CreateQueue is for the same attributes (two processes
    creating it at once).
    """
    if not valid_task_queue_name(name):
        # SQS's rule (1 to 80 of these), with room for the dead-letter queue's "-dlq".
        raise QueueNotProvisioned(
            f"{name!r:.120} cannot name a task queue: 1 to 76 letters, digits, '-' or '_' "
            "(then '.fifo' for a FIFO queue)"
        )
    fifo = name.endswith(".fifo")
    encryption = {"KmsMasterKeyId": kms_key} if kms_key else {}
    dead_letters = sqs.create_queue(
        QueueName=dead_letter_name(name),
        Attributes={
            "MessageRetentionPeriod": str(DEAD_LETTER_RETENTION),
            **({"FifoQueue": "true"} if fifo else {}),
            **encryption,
        },
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dead_letters, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    attributes = task_queue_attributes(
        visibility_timeout=visibility_timeout,
        wait_seconds=wait_seconds,
        dead_letter_arn=arn,
        fifo=fifo,
    )
    url: str = sqs.create_queue(QueueName=name, Attributes={**attributes, **encryption})["QueueUrl"]
    return url
