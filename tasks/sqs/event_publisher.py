"""Publishing a worker's events to SNS from a background thread, ten per request.

Celery publishes events from the worker's event loop, synchronously: every
event would be an SNS ``Publish`` request the loop waits for, and while the
endpoint is slow or failing (retries with backoff) the worker would stop
taking tasks. Events are best effort in Celery's own design, so here they are
queued (bounded), sent by one thread with ``PublishBatch`` (up to ten messages
and 256 KiB per request) and, when SNS fails, dropped with a warning instead
of holding up work.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from tasks.queues import BATCH, BATCH_BYTES

__all__ = ["BatchPublisher"]

log = logging.getLogger(__name__)

#: SNS's limits for one PublishBatch request.
_BATCH_COUNT = BATCH
#: How long the thread waits for more messages to fill a batch.
_LINGER = 0.2


class BatchPublisher:
    """A bounded queue of messages for SNS topics, drained by one thread."""

    def __init__(
        self, client: Any, topic_arn: Callable[[str], str], *, capacity: int = 10_000
    ) -> None:
        self._client = client
        self._topic_arn = topic_arn
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue(capacity)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: Messages dropped (queue full or SNS failing).
        self.dropped = 0

    def submit(self, exchange: str, message: str) -> None:
        """Queue ``message`` for the topic of ``exchange``; never blocks."""
        self._start()
        try:
            self._queue.put_nowait((exchange, message))
        except queue.Full:
            self.dropped += 1
            log.warning("event queue full: an event was dropped (%d so far)", self.dropped)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (waiting up to ``timeout`` seconds), then stop."""
        thread = self._thread
        if thread is None:
            return
        self._queue.put(None)
        thread.join(timeout)
        self._thread = None

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="cloudworker-sns-publisher", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._fill(first)
            self._send(batch)
            if stop:
                return

    def _fill(self, first: tuple[str, str]) -> tuple[list[tuple[str, str]], bool]:
        batch, size = [first], len(first[1])
        deadline = time.monotonic() + _LINGER
        while len(batch) < _BATCH_COUNT:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                return batch, True
            if item[0] != first[0] or size + len(item[1]) > BATCH_BYTES:
                self._send([item])  # another topic, or too big to join: on its own
                continue
            batch.append(item)
            size += len(item[1])
        return batch, False

    def _send(self, batch: list[tuple[str, str]]) -> None:
        try:
            response = self._client.publish_batch(
                TopicArn=self._topic_arn(batch[0][0]),
                PublishBatchRequestEntries=[
                    {"Id": str(i), "Message": message} for i, (_, message) in enumerate(batch)
                ],
            )
            failed = len(response.get("Failed", []))
        except Exception as exc:  # noqa: BLE001 - events are best effort; work goes on
            failed = len(batch)
            log.warning("could not publish %d event(s) to SNS: %s", failed, exc)
        self.dropped += failed
