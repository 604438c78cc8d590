"""Sending many messages in few requests: SQS batch sends.

Inside ``with batch_sends() as batch:`` the messages the transport sends are
collected per queue and sent with ``SendMessageBatch``, ten per request (and at
most 256 KiB per request), when a batch fills and when the block ends.
``batch.messages`` and ``batch.requests`` say what it cost.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from cloudworker.errors import BatchSendError
from cloudworker.queues import BATCH, BATCH_BYTES

__all__ = ["BatchSendError", "BatchingClient", "SendBatch", "batch_sends", "current_batch"]


class SendBatch:
    """Messages waiting to be sent together, per queue, and what sending them cost."""

    def __init__(self) -> None:
        self.messages = 0
        self.requests = 0
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[Any, list[dict[str, Any]]]] = {}

    def add(self, client: Any, message: dict[str, Any]) -> None:
        """Queue one ``send_message`` call's arguments; send the batch once it is full."""
        url = message.pop("QueueUrl")
        entry = {"Id": uuid.uuid4().hex, **message}
        with self._lock:
            _, entries = self._pending.setdefault(url, (client, []))
            size = sum(len(e["MessageBody"]) for e in entries)
            if entries and (
                len(entries) == BATCH or size + len(entry["MessageBody"]) > BATCH_BYTES
            ):
                self._send(url)
                _, entries = self._pending.setdefault(url, (client, []))
            entries.append(entry)

    def flush(self) -> None:
        """Send everything still waiting."""
        with self._lock:
            for url in list(self._pending):
                self._send(url)

    def _send(self, url: str) -> None:
        client, entries = self._pending.pop(url)
        response = client.send_message_batch(QueueUrl=url, Entries=entries)
        self.requests += 1
        self.messages += len(entries)
        failed = response.get("Failed") or []
        if failed:
            reasons = sorted({f.get("Message") or f.get("Code", "?") for f in failed})
            raise BatchSendError(
                f"{len(failed)} of {len(entries)} messages were refused: {'; '.join(reasons)}"
            )


_current: ContextVar[SendBatch | None] = ContextVar("cloudworker_send_batch", default=None)


@contextlib.contextmanager
def batch_sends() -> Iterator[SendBatch]:
    """Collect the messages sent in this block and send them ten per request."""
    batch = SendBatch()
    token = _current.set(batch)
    try:
        yield batch
    finally:
        _current.reset(token)
    batch.flush()


class BatchingClient:
    """An SQS client whose ``send_message`` joins the current batch."""

    def __init__(self, client: Any, batch: SendBatch) -> None:
        self._client = client
        self._batch = batch

    def send_message(self, **kwargs: Any) -> None:
        self._batch.add(self._client, kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def current_batch() -> SendBatch | None:
    """The batch of the enclosing ``batch_sends()`` block, if any."""
    return _current.get()
