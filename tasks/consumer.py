"""The worker's consumer: Celery's, except that undecodable messages are not lost.

Celery acknowledges (deletes) a task message it cannot decode, so it is gone
without a trace. Rejecting it instead sends it to the dead-letter queue
(:mod:`tasks.transport`), where ``python -m client dlq list`` shows it.

It also sets the interval of the worker's event heartbeats from the settings
(``CLOUDWORKER_EVENT_HEARTBEAT``, 30 s) unless ``--heartbeat-interval`` is
given: each heartbeat is an SNS publish, and Celery's 2 s would be 1,800 of
them an hour per worker.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

__all__ = ["Consumer"]

log = logging.getLogger(__name__)


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's consumer, with undecodable messages rejected to the dead-letter queue."""

    def __init__(self, *args: Any, worker_options: Any = None, **kwargs: Any) -> None:
        options = dict(worker_options or {})
        services = getattr(kwargs.get("app"), "services", None)
        if options.get("heartbeat_interval") is None and services is not None:
            options["heartbeat_interval"] = services.settings.event_heartbeat
        super().__init__(*args, worker_options=options, **kwargs)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        log.critical(
            "cannot decode a message (%s, content type %r): moving it to the dead-letter queue",
            exc,
            message.content_type,
        )
        message.reject_log_error(log, self.connection_errors)
