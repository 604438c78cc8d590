"""The Celery app: SQS broker through cloudworker's transport, results in S3 + SQS.

``celery -A tasks worker`` finds the app made here as ``tasks.app``.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from celery import Celery
from celery.utils import uuid
from celery.utils.saferepr import saferepr
from kombu.exceptions import EncodeError

from cloudworker import aws, codec, tracing
from cloudworker.keys import check_task_id, task_payload_prefix
from cloudworker.services import Services
from cloudworker.settings import Settings
from cloudworker.settings import load as load_settings
from cloudworker.task import sendable
from cloudworker.worker.reaper import Reaper
from cloudworker.worker.revocations import StoredRevocations
from cloudworker.worker.shutdown import ShutdownGrace
from cloudworker.worker.visibility import VisibilityHeartbeat

__all__ = ["CloudworkerCelery", "create_app"]

log = logging.getLogger(__name__)


class CloudworkerCelery(Celery):  # type: ignore[misc]
    """A Celery app whose tasks carry the caller's response queue as ``reply_to``."""

    services: Services

    @property
    def thread_oid(self) -> str:
        """The reply address of tasks sent from here: this process's response queue.

        Celery uses ``thread_oid`` as the default ``reply_to`` of every task it
        sends, directly (``send_task``) and through canvas (``group``, ``chain``).
        """
        reply_address = getattr(self.backend, "reply_address", None)
        if reply_address is None:
            oid: str = super().thread_oid
            return oid
        address: str = reply_address()
        return address

    def send_task(
        self,
        name: str,
        args: Any = None,
        kwargs: Any = None,
        *,
        task_id: Any = None,
        **options: Any,
    ) -> Any:
        """Celery's ``send_task``: large arguments go under ``payloads/<task id>/``.

        Every task Celery sends passes here (``delay``, ``apply_async``, canvas).
        Keying the payloads by task id is what lets the worker confine the
        references it resolves and deletes to its own task's; a value the codec
        refuses raises its typed error, not kombu's ``EncodeError``; the trace span
        of a publish that fails is ended (:func:`cloudworker.tracing.publishing`); and a
        task whose ``reply_to`` is another process's is not waited for here.
        """
        task_id = check_task_id(task_id) if task_id is not None else uuid()
        if "argsrepr" not in options and "kwargsrepr" not in options:
            options.update(self._reprs(args, kwargs))
        replies_to = getattr(self.backend, "replies_to", None)
        with (
            codec.payload_prefix(task_payload_prefix(task_id)),
            tracing.publishing(name, task_id),
            replies_to(options.get("reply_to")) if replies_to else contextlib.nullcontext(),
        ):
            try:
                return super().send_task(name, args, kwargs, task_id=task_id, **options)
            except EncodeError as exc:
                raise sendable(exc) from exc

    def _reprs(self, args: Any, kwargs: Any) -> dict[str, str]:
        """``argsrepr``/``kwargsrepr`` as Celery makes them, except that an integer
        past the int/str conversion limit (on which Celery's fails) is shortened."""
        args, kwargs = args or (), kwargs or {}
        try:
            return self._saferepr(args, kwargs)
        except ValueError:
            return self._saferepr(codec.loggable(args), codec.loggable(kwargs))

    def _saferepr(self, args: Any, kwargs: Any) -> dict[str, str]:
        levels = self.conf.task_repr_maxlevels
        return {
            "argsrepr": saferepr(args, self.amqp.argsrepr_maxsize, maxlevels=levels),
            "kwargsrepr": saferepr(kwargs, self.amqp.kwargsrepr_maxsize, maxlevels=levels),
        }


def create_app(
    settings: Settings | None = None, *, services: Services | None = None
) -> CloudworkerCelery:
    """Build the app from ``settings`` (default: the environment)."""
    settings = settings or load_settings()
    services = services or Services(settings)
    # app.control writes each revocation to S3 before broadcasting it (worker/revocations.py).
    app = CloudworkerCelery(
        "cloudworker",
        task_cls="cloudworker.task:CloudworkerTask",
        control="cloudworker.worker.revocations:Control",
    )
    app.services = services
    # kombu's serializer registry is process-wide: the codec of the last app made
    # in a process serves every app of that process (bench runs one process per client).
    codec.install(services.codec)
    app.conf.update(
        broker_url="sqs://",
        broker_transport="cloudworker.sqs:Transport",
        broker_transport_options={
            "region": settings.region,
            "queue_name_prefix": settings.queue_prefix,
            "wait_time_seconds": settings.wait_seconds,
            # Long polling already waits; a client-side sleep on top only adds latency.
            "polling_interval": 0,
            "visibility_timeout": settings.visibility_timeout,
            # Celery's events and remote control over SNS fanout (cloudworker/sqs/fanout.py).
            "supports_fanout": settings.remote_control or settings.events,
            "receiver_queue_prefix": settings.receiver_queue_prefix,
            "receiver_max_age": settings.response_queue_max_age,
            # Receiver queues are encrypted with the key every queue cloudworker makes gets.
            "kms_key": settings.kms_key,
            # kombu's own boto3 client (publish, acknowledge): bounded waits, and
            # botocore's standard retries with backoff for throttling and 5xx.
            "client-config": {
                "connect_timeout": 5,
                "read_timeout": settings.wait_seconds + 15,
                "retries": {"mode": "standard", "max_attempts": 8},
            },
        },
        broker_connection_retry_on_startup=True,
        result_backend="cloudworker.results.backend:CloudworkerBackend",
        # A result is stored through endpoint faults: transient errors are retried with
        # exponential backoff (up to 10 s apart, for about five minutes).
        result_backend_always_retry=True,
        result_backend_max_retries=30,
        result_backend_max_sleep_between_retries_ms=10_000,
        # JSON only, everywhere: a pickle message is refused, never deserialized.
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # At-least-once: a task is acknowledged after it ran, and re-queued if the
        # process running it dies.
        task_acks_late=True,
        # A running task reads STARTED: written only if it runs longer than
        # CLOUDWORKER_STATE_INTERVAL (cloudworker/results/progress.py), so short tasks pay nothing.
        task_track_started=True,
        task_reject_on_worker_lost=True,
        # Receive several messages per request; the visibility heartbeat keeps the
        # ones waiting for a free process from expiring (cloudworker/worker/visibility.py).
        worker_prefetch_multiplier=settings.prefetch_multiplier,
        task_default_queue=settings.task_queue,
        result_expires=None,
        worker_consumer="cloudworker.worker.consumer:Consumer",
        # Monitoring (Flower, celery inspect/control/events) over SNS: each event and
        # each heartbeat is one SNS publish (README: "Monitoring and its cost").
        worker_enable_remote_control=settings.remote_control,
        worker_send_task_events=settings.events,
        # task-sent events (Flower, celery_task_sent_total, the age of the oldest
        # waiting task in deploy/exporter.py): one more SNS publish per task, so opt-in.
        task_send_sent_event=settings.events and settings.sent_events,
    )
    # cloudworker's own clients sign as kombu's transport does: the keys of the broker
    # URL or of the task queue in predefined_queues, and sts_role_arn (cloudworker/aws.py).
    # Read when the first client is made, so what a user sets in app.conf counts.
    services.credentials = lambda: aws.Credentials.of_broker(
        app.conf.broker_url, app.conf.broker_transport_options, settings.task_queue
    )
    # The transport needs the names Celery gives its monitoring exchanges and queues.
    app.conf.broker_transport_options.update(
        event_exchange=app.conf.event_exchange,
        event_queue_prefix=app.conf.event_queue_prefix,
        control_namespace=app.conf.control_exchange,
    )
    # Traces across client and worker, when OpenTelemetry's Celery instrumentation is installed.
    tracing.instrument(settings)
    app.steps["consumer"].add(VisibilityHeartbeat)
    app.steps["worker"].add(Reaper)
    app.steps["worker"].add(StoredRevocations)
    app.steps["worker"].add(ShutdownGrace)
    return app
