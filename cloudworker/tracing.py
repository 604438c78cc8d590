"""Traces across client and worker: Celery instrumented with OpenTelemetry, if installed.

Tracing is optional. Without ``opentelemetry-instrumentation-celery`` installed,
or with ``CLOUDWORKER_TRACING`` off, nothing here does anything; and until the
user configures a TracerProvider (``opentelemetry-instrument``, the ``OTEL_*``
variables, or their own code) OpenTelemetry's API records nothing.

With it, a ``.delay()`` and the task's run on a worker are one trace: the
instrumentation injects the context into the task message's headers (W3C
``traceparent``, ``tracestate``) at ``before_task_publish`` and extracts it from
the task's request at ``task_prerun``. The headers sit in kombu's envelope beside
the task's body, and the codec encodes only the body: so they travel unchanged
when the arguments go through S3 (the claim check replaces the body or its large
parts) and when messages are sent ten per request (:mod:`cloudworker.sqs.batch_sends`
batches whole SQS message bodies). The worker's admission lets them through as
long as they are bounded text (:mod:`cloudworker.worker.admission`).

Celery is instrumented where the app is made (:func:`instrument`): in a client,
and in the worker's main process, which publishes the inbox's tasks. A pool
process inherits that through the fork; ``worker_process_init`` instruments it
again if it did not, as OpenTelemetry asks for prefork pools.

Two gaps of the instrumentation are closed here: a publish that raises (an
argument the codec refuses, a queue that does not exist) never gets the
``after_task_publish`` that ends its span, which would stay current in the
thread as the parent of every later send (:func:`publishing`); and an S3 event
carries no context, so each inbox object starts a trace of its own
(:func:`inbox_span`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from celery.signals import worker_process_init

from cloudworker.settings import Settings

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
except ImportError:  # tracing is optional
    otel_context = None  # type: ignore[assignment]
    trace = None  # type: ignore[assignment]

__all__ = ["BUCKET_ATTRIBUTE", "KEY_ATTRIBUTE", "inbox_span", "instrument", "publishing"]

log = logging.getLogger(__name__)

#: The instrumentation scope of the spans cloudworker starts itself.
TRACER_NAME = "cloudworker"
#: OpenTelemetry's semantic conventions for an S3 object.
BUCKET_ATTRIBUTE = "aws.s3.bucket"
KEY_ATTRIBUTE = "aws.s3.key"


def _instrumentor() -> Any:
    """OpenTelemetry's Celery instrumentor (one per process), or None if not installed."""
    try:
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
    except ImportError:
        return None
    return CeleryInstrumentor()  # type: ignore[no-untyped-call]


def _instrument_celery() -> bool:
    """Instrument Celery in this process unless it already is; whether it is now."""
    instrumentor = _instrumentor()
    if instrumentor is None:
        return False
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()
    return bool(instrumentor.is_instrumented_by_opentelemetry)


def instrument(settings: Settings) -> bool:
    """Instrument Celery in this process and its pool processes, if on and installed.

    Returns False when tracing is off or the instrumentation is not installed. It
    is idempotent, and leaves alone an instrumentation made by someone else
    (``opentelemetry-instrument``, which instruments Celery itself).
    """
    if not settings.tracing or not _instrument_celery():
        return False
    worker_process_init.connect(_on_pool_process, weak=False, dispatch_uid=__name__)
    return True


def _on_pool_process(**_: Any) -> None:
    _instrument_celery()


@contextlib.contextmanager
def publishing(name: str, task_id: str) -> Iterator[None]:
    """Around the publish of task ``task_id`` (``name``): end its span if it fails.

    The instrumentation ends a publish span at ``after_task_publish``, which Celery
    sends only when the publish returns. Here a failed publish's span ends with
    the error, and the context it made current is restored.
    """
    try:
        yield
    except BaseException as exc:
        _end_failed_publish(name, task_id, exc)
        raise


def _end_failed_publish(name: str, task_id: str, exc: BaseException) -> None:
    """What ``after_task_publish`` would have done, with the error recorded."""
    if trace is None:
        return
    try:
        from opentelemetry.instrumentation.celery import utils

        task = utils.retrieve_task_from_sender({"sender": name})
        pending = utils.retrieve_context(task, task_id, is_publish=True)
        if pending is None:  # not instrumented, or its span has already ended
            return
        _, activation, _ = pending
        utils.detach_context(task, task_id, is_publish=True)
        activation.__exit__(type(exc), exc, exc.__traceback__)
    except Exception:  # tracing never hides the publish's own error
        log.debug("could not end the span of a failed publish", exc_info=True)


@contextlib.contextmanager
def inbox_span(settings: Settings, key: str) -> Iterator[None]:
    """A root span for inbox object ``key``; the task queued inside it joins its trace.

    Named ``inbox <key>``, of kind CONSUMER, with the bucket and the key as
    attributes. A root, whatever is current: an S3 event carries no context, and
    each object it names is a unit of work of its own.
    """
    if trace is None or not settings.tracing:
        yield
        return
    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(
        f"inbox {key}",
        context=otel_context.Context(),
        kind=trace.SpanKind.CONSUMER,
        attributes={BUCKET_ATTRIBUTE: settings.bucket, KEY_ATTRIBUTE: key},
    ):
        yield
