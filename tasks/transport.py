"""cloudworker's kombu transport: kombu's SQS transport with our defaults.

Selected by configuration (``broker_transport = "tasks.transport:Transport"``),
not by patching kombu. What it changes:

* Messages travel as plain JSON. kombu's SQS transport base64-encodes every
  message twice by default (the body, then the whole envelope: about x1.78);
  JSON needs neither layer, so an inline payload can be almost twice as large.
  The receive path still reads base64 messages from other producers.
* Queues are never created as a side effect of the first message: they belong
  to the provisioning step (``python -m deploy provision``). Using a queue that
  does not exist is a clear :class:`QueueNotProvisioned` error.
* Inside ``with batch_sends() as batch:`` messages are not sent one request each
  but collected and sent with ``SendMessageBatch``, ten per request, when the
  block ends (or as each batch fills): ``group(...).apply_async()`` inside the
  block sends a thousand tasks in a hundred requests. ``batch.requests`` and
  ``batch.messages`` say what was saved.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from kombu.transport import SQS
from kombu.transport.SQS.exceptions import DoesNotExistQueueException

__all__ = [
    "BatchSendError",
    "Channel",
    "QueueNotProvisioned",
    "SendBatch",
    "Transport",
    "batch_sends",
]

#: SendMessageBatch takes at most ten messages...
_BATCH_COUNT = 10
#: ...and, on queues older than 2025, at most 256 KiB in all.
_BATCH_BYTES = 256 * 1024


class QueueNotProvisioned(Exception):
    """A queue the app needs does not exist: the provisioning step has not run."""


class BatchSendError(Exception):
    """Some messages of a batch were refused by SQS."""


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
                len(entries) == _BATCH_COUNT or size + len(entry["MessageBody"]) > _BATCH_BYTES
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


_batch: ContextVar[SendBatch | None] = ContextVar("cloudworker_send_batch", default=None)


@contextlib.contextmanager
def batch_sends() -> Iterator[SendBatch]:
    """Collect the messages sent in this block and send them ten per request."""
    batch = SendBatch()
    token = _batch.set(batch)
    try:
        yield batch
    finally:
        _batch.reset(token)
    batch.flush()


class _BatchingClient:
    """An SQS client whose ``send_message`` joins the current batch."""

    def __init__(self, client: Any, batch: SendBatch) -> None:
        self._client = client
        self._batch = batch

    def send_message(self, **kwargs: Any) -> None:
        self._batch.add(self._client, kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class Channel(SQS.Channel):
    """kombu's SQS channel, with plain JSON bodies and no implicit queue creation."""

    #: No base64 layer on message bodies (kombu's virtual transport default is base64).
    body_encoding: str | None = None  # type: ignore[assignment]

    @property
    def sqs_base64_encoding(self) -> bool:
        """No base64 layer on the SQS message body either, unless configured."""
        return bool(self.transport_options.get("sqs_base64_encoding", False))

    def _new_queue(self, queue: str, **kwargs: Any) -> str:
        try:
            url: str = self._resolve_queue_url(queue)  # type: ignore[no-untyped-call]
        except DoesNotExistQueueException:
            name = self.canonical_queue_name(queue)  # type: ignore[no-untyped-call]
            raise QueueNotProvisioned(
                f"SQS queue {name!r} does not exist: run the provisioning step "
                "(`make up` locally, `python -m deploy provision` or the AWS stack)"
            ) from None
        return url

    def sqs(self, queue: str | None = None) -> Any:
        client = super().sqs(queue=queue)  # type: ignore[no-untyped-call]
        batch = _batch.get()
        return client if batch is None else _BatchingClient(client, batch)


class Transport(SQS.Transport):
    """kombu's SQS transport with :class:`Channel`."""

    Channel = Channel
