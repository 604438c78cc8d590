"""Publishing a worker's events to SNS from a background thread, ten per request.

Celery publishes events from the worker's event loop, synchronously: every
event would be an SNS ``Publish`` request the loop waits for, and while the
endpoint is slow or failing (retries with backoff) the worker would stop
taking tasks. Events are best effort in Celery's own design, so here they are
queued (bounded), sent by one thread with ``PublishBatch`` (up to ten messages
and 256 KiB per request; an :class:`~cloudworker.outbox.Outbox` that waits up to 0.2 s
for a batch to fill) and, when SNS fails, dropped with a warning instead of
holding up work.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from cloudworker.outbox import Outbox
from cloudworker.queues import body_batches

__all__ = ["BatchPublisher"]

log = logging.getLogger(__name__)

#: How long an event waits for others to share its PublishBatch.
_LINGER = 0.2


class BatchPublisher:
    """A bounded set of messages for SNS topics, published in batches by one thread."""

    def __init__(
        self, client: Any, topic_arn: Callable[[str], str], *, capacity: int = 10_000
    ) -> None:
        self._client = client
        self._topic_arn = topic_arn
        self._capacity = capacity
        self._lock = threading.Lock()
        self._waiting = 0
        self._outbox = self._new_outbox()
        #: Messages dropped (too many waiting, or SNS failing).
        self.dropped = 0

    def submit(self, exchange: str, message: str) -> None:
        """Queue ``message`` for the topic of ``exchange``; never blocks."""
        with self._lock:
            if self._waiting >= self._capacity:
                self.dropped += 1
                log.warning("event queue full: an event was dropped (%d so far)", self.dropped)
                return
            self._waiting += 1
        self._outbox.put(exchange, message).add_done_callback(self._sent)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (waiting up to ``timeout`` seconds), then stop."""
        outbox, self._outbox = self._outbox, self._new_outbox()
        outbox.close(timeout)

    def _new_outbox(self) -> Outbox[str, str]:
        return Outbox(self._publish, name="cloudworker-sns-publisher", linger=_LINGER)

    def _sent(self, _: Future[None]) -> None:
        with self._lock:
            self._waiting -= 1

    def _publish(self, exchange: str, messages: Sequence[str]) -> None:
        """Publish to ``exchange``'s topic, ten (and 256 KiB) per request; count failures."""
        for batch in body_batches(messages):
            try:
                response = self._client.publish_batch(
                    TopicArn=self._topic_arn(exchange),
                    PublishBatchRequestEntries=[
                        {"Id": str(i), "Message": message} for i, message in enumerate(batch)
                    ],
                )
                failed = len(response.get("Failed", []))
            except Exception as exc:  # noqa: BLE001 - events are best effort; work goes on
                failed = len(batch)
                log.warning("could not publish %d event(s) to SNS: %s", failed, exc)
            with self._lock:
                self.dropped += failed
