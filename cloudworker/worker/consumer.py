"""The worker's consumer: Celery's, except that no refused message is lost or loud.

Celery acknowledges (deletes) a task message it cannot decode, so it is gone
without a trace, and logs every refusal with a traceback. Here every message the
worker refuses (undecodable, an unknown task, a broken header or body found by
:mod:`cloudworker.worker.admission`, a content type other than JSON) is rejected with its
reason, which the transport (:mod:`cloudworker.sqs`) attaches when it moves the
message to the dead-letter queue, where ``python -m client dlq list`` shows it.
The log gets one line, since a refusal is expected, not a bug. When the message
names a task id, the caller is answered at once with the typed error
(:class:`~cloudworker.errors.InvalidMessage`, or Celery's ``NotRegistered``) instead
of waiting for a result that will never come.

It also sets the interval of the worker's event heartbeats from the settings
(``CLOUDWORKER_EVENT_HEARTBEAT``, 30 s) unless ``--heartbeat-interval`` is
given: each heartbeat is an SNS publish, and Celery's 2 s would be 1,800 of
them an hour per worker.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import NotRegistered
from celery.worker import control
from celery.worker.consumer import Consumer as CeleryConsumer

from cloudworker.errors import InvalidMessage
from cloudworker.queues import REASON_KEY
from cloudworker.worker.admission import answer

__all__ = ["Consumer"]

log = logging.getLogger(__name__)

#: Longest reason kept with a dead letter.
_MAX_REASON = 500


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's consumer, with refused messages dead-lettered with their reason."""

    def __init__(self, *args: Any, worker_options: Any = None, **kwargs: Any) -> None:
        options = dict(worker_options or {})
        services = getattr(kwargs.get("app"), "services", None)
        if options.get("heartbeat_interval") is None and services is not None:
            options["heartbeat_interval"] = services.settings.event_heartbeat
        super().__init__(*args, worker_options=options, **kwargs)

    def add_task_queue(self, queue: str, *args: Any, **options: Any) -> None:
        """Celery's; a queue that cannot be consumed is a warning, not the worker's end.

        Celery runs this from the event loop (``add_consumer``), where an error
        (the queue does not exist, or SQS refused) was unrecoverable: the worker
        stopped. :func:`add_consumer` refuses an unknown queue before it comes here.
        """
        try:
            super().add_task_queue(queue, *args, **options)
        except Exception as exc:  # noqa: BLE001 - one queue, never the worker
            log.warning("cannot consume from queue %s: %s", queue, exc)
            consumer = self.task_consumer
            consumer.queues = [q for q in consumer.queues if q.name != queue]
            self.app.amqp.queues.deselect(queue)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        cause = exc.args[0] if exc.args and isinstance(exc.args[0], Exception) else exc
        self._refuse(message, f"cannot decode the body: {_describe(cause)}")

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._refuse(message, f"invalid task message: {exc}")

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._refuse(message, "not a task message (no task header)")

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        name = message.headers.get("task") if isinstance(message.headers, dict) else None
        self._refuse(message, f"unknown task {name!r:.80}", error=NotRegistered(str(name)))

    def _refuse(self, message: Any, reason: str, error: Exception | None = None) -> None:
        """Log one line, answer the caller if the message says who it is, dead-letter it."""
        reason = " ".join(reason.split())[:_MAX_REASON]
        headers = message.headers if isinstance(message.headers, dict) else {}
        log.warning(
            "refused a message (task %r, id %r): %s",
            str(headers.get("task"))[:80],
            str(headers.get("id"))[:80],
            reason,
        )
        try:
            answer(
                self.app.backend,
                message,
                error or InvalidMessage(reason),
                self.app.services.settings,
            )
        except Exception as exc:  # noqa: BLE001 - the dead letter still says why
            log.warning("could not answer the caller of a refused message: %s", exc)
        delivery_info = message.delivery_info
        if isinstance(delivery_info, dict):
            delivery_info[REASON_KEY] = reason
        message.reject_log_error(log, self.connection_errors)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


_celery_add_consumer = control.Panel.data["add_consumer"]


@control.control_command(  # type: ignore[untyped-decorator]
    args=[("queue", str), ("exchange", str), ("exchange_type", str), ("routing_key", str)],
    signature="<queue> [exchange [type [routing_key]]]",
)
def add_consumer(state: Any, queue: str, *args: Any, **options: Any) -> Any:
    """Celery's ``add_consumer``, answering an error for a queue that does not exist.

    Celery's answers "ok" and leaves the consuming to the event loop, where a
    queue that does not exist ended the worker: one typo sent to every worker
    stopped the fleet.
    """
    channel = getattr(getattr(state.consumer, "connection", None), "default_channel", None)
    new_queue = getattr(channel, "_new_queue", None)
    if new_queue is not None:
        try:
            new_queue(queue)
        except Exception as exc:  # noqa: BLE001 - answered, never raised into the loop
            log.warning("add_consumer %s refused: %s", queue, exc)
            return control.nok(f"cannot consume from {queue}: {exc}")
    return _celery_add_consumer(state, queue, *args, **options)
