"""The worker's consumer: Celery's, except that undecodable messages are not lost.

Celery acknowledges (deletes) a task message it cannot decode, so it is gone
without a trace. Rejecting it instead sends it to the dead-letter queue
(:mod:`tasks.transport`), where ``python -m client dlq list`` shows it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

__all__ = ["Consumer"]

log = logging.getLogger(__name__)


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's consumer, with undecodable messages rejected to the dead-letter queue."""

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        log.critical(
            "cannot decode a message (%s, content type %r): moving it to the dead-letter queue",
            exc,
            message.content_type,
        )
        message.reject_log_error(log, self.connection_errors)
