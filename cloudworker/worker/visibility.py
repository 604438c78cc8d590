"""Keeping the SQS messages of reserved and running tasks invisible while the worker has them.

SQS hides a received message for the queue's visibility timeout; a task still
running (or still waiting in the worker for a free process) when it ends is
delivered again, to another worker, and runs twice. :class:`VisibilityHeartbeat`
is a consumer bootstep that, every third of the visibility timeout, extends
the visibility of every message this worker holds with
``ChangeMessageVisibilityBatch`` (ten per request). It stops with the task
(the request leaves the worker's state) or with the worker: a worker that dies
stops extending, and its messages come back after at most one visibility timeout.

Because held messages no longer expire, a worker can safely prefetch a full
receive of ten messages (``worker_prefetch_multiplier``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from celery import bootsteps
from celery.worker import state

from cloudworker.queues import batches, receipt_entries

__all__ = ["VisibilityHeartbeat", "extend_visibility", "held_messages"]

log = logging.getLogger(__name__)


def held_messages(requests: Any) -> dict[str, list[str]]:
    """Receipt handles of the SQS messages behind ``requests``, per queue URL."""
    held: dict[str, list[str]] = defaultdict(list)
    for request in list(requests):
        message = getattr(request, "message", None)
        info = getattr(message, "delivery_info", None) or {}
        url, receipt = info.get("sqs_queue"), getattr(message, "delivery_tag", None)
        if url and receipt and not getattr(message, "acknowledged", False):
            held[url].append(receipt)
    return held


class VisibilityHeartbeat(bootsteps.StartStopStep):  # type: ignore[misc]
    """Extends the visibility of the messages this worker holds, on a timer."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._services = parent.app.services
        self.timeout = self._services.settings.visibility_timeout
        self.interval = max(1.0, self.timeout / 3)
        self._timer: Any = None

    def start(self, consumer: Any) -> None:
        if self.timeout > 0:
            self._timer = consumer.timer.call_repeatedly(self.interval, self.beat)

    def stop(self, consumer: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    shutdown = stop

    def beat(self) -> None:
        """Extend every held message's visibility by a whole timeout, now."""
        extend_visibility(self._services.client("sqs"), state.requests.values(), self.timeout)


def extend_visibility(sqs: Any, requests: Any, timeout: int) -> None:
    """Hide the messages behind ``requests`` for ``timeout`` more seconds, ten per request."""
    held = held_messages(requests)
    if not held:
        return
    for url, receipts in held.items():
        for batch in batches(receipts):
            entries = receipt_entries(batch, VisibilityTimeout=timeout)
            try:
                sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries)
            except Exception as exc:  # noqa: BLE001 - try again at the next beat
                log.warning(
                    "could not extend the visibility of %d message(s): %s", len(entries), exc
                )
