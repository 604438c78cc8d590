"""Tracing (cloudworker/tracing.py): instrumentation, the inbox's root spans, failed publishes.

In process, on kombu's in-memory transport; the path through SQS, S3 and real
workers is tests/integration/test_tracing.py.
"""

from __future__ import annotations

import importlib
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from celery import Celery, _state
from celery.signals import worker_process_init
from kombu.exceptions import EncodeError
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, StatusCode, TraceFlags, TraceState

import cloudworker
from cloudworker import tracing
from cloudworker.settings import Settings
from cloudworker.worker.admission import message_problem
from tests.support.otel import instrumented_celery

SETTINGS = Settings()


@dataclass
class Traced:
    """A tracer provider of the test's own, what it finished, and a tracer from it."""

    provider: TracerProvider
    exporter: InMemorySpanExporter

    @property
    def tracer(self) -> trace.Tracer:
        return self.provider.get_tracer(__name__)

    def finished(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.exporter.get_finished_spans() if span.name == name]


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Iterator[Traced]:
    """Celery instrumented into the test's provider (also for the inbox's spans), then as before."""
    with instrumented_celery() as (provider, exporter):
        # The inbox's spans come from the global provider, which a process sets only once:
        # get_tracer hands out this provider's tracers instead.
        monkeypatch.setattr(trace, "get_tracer", lambda name, *_, **__: provider.get_tracer(name))
        yield Traced(provider, exporter)


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Celery:
    """A Celery app on kombu's in-memory transport, current for as long as the test runs.

    The instrumentation finds a task by name in the current app. It gets only its
    own task, not those Celery shares with every app it finalizes (other tests' apps).
    """
    monkeypatch.setattr(_state._tls, "current_app", _state._tls.current_app)
    monkeypatch.setattr(_state, "_on_app_finalizers", set())
    app = Celery("tracing-test", broker="memory://", set_as_current=True)
    app.conf.task_default_queue = f"tracing-{uuid.uuid4().hex}"  # kombu's memory is per process

    @app.task(name="t.echo", shared=False)  # type: ignore[untyped-decorator]
    def echo(value: Any) -> Any:
        return value

    app.finalize()
    return app


def hex_ids(context: SpanContext | None) -> tuple[str, str]:
    assert context is not None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def test_nothing_is_instrumented_when_tracing_is_off() -> None:
    assert tracing.instrument(Settings(tracing=False)) is False


def test_without_opentelemetry_tracing_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh import of cloudworker.tracing in a process where OpenTelemetry cannot be imported.
    for name in [name for name in sys.modules if name.split(".")[0] == "opentelemetry"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.delitem(sys.modules, "cloudworker.tracing")
    monkeypatch.setattr(cloudworker, "tracing", tracing)  # the import rebinds it: put back after
    fresh = importlib.import_module("cloudworker.tracing")
    assert fresh is not tracing and fresh.trace is None
    assert fresh.instrument(SETTINGS) is False
    with fresh.inbox_span(SETTINGS, "inbox/a.jpg"), fresh.publishing("t", "id"):
        pass
    with pytest.raises(ValueError, match="publish failed"), fresh.publishing("t", "id"):
        raise ValueError("publish failed")


def test_a_pool_process_is_instrumented_again_if_the_fork_did_not_carry_it(
    traced: Traced,
) -> None:
    instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
    assert tracing.instrument(SETTINGS) is True  # already instrumented: left as it is
    instrumentor.uninstrument()
    worker_process_init.send(sender=None)
    assert instrumentor.is_instrumented_by_opentelemetry


def test_each_inbox_object_is_a_root_span_of_its_own(traced: Traced) -> None:
    with traced.tracer.start_as_current_span("ambient"):
        for key in ("inbox/a.jpg", "inbox/b.jpg"):
            with (
                tracing.inbox_span(SETTINGS, key),
                traced.tracer.start_as_current_span(f"queue {key}"),
            ):
                pass
    for key in ("inbox/a.jpg", "inbox/b.jpg"):
        (root,) = traced.finished(f"inbox {key}")
        (child,) = traced.finished(f"queue {key}")
        assert root.parent is None
        assert root.kind is trace.SpanKind.CONSUMER
        assert dict(root.attributes or {}) == {"aws.s3.bucket": SETTINGS.bucket, "aws.s3.key": key}
        assert child.parent is not None
        assert hex_ids(child.parent) == hex_ids(root.get_span_context())
    traces = {
        span.context.trace_id for span in traced.exporter.get_finished_spans() if span.context
    }
    assert len(traces) == 3  # the ambient span's, and one per object


def test_no_inbox_span_when_tracing_is_off(traced: Traced) -> None:
    with tracing.inbox_span(Settings(tracing=False), "inbox/a.jpg"):
        pass
    assert traced.exporter.get_finished_spans() == ()


def test_the_trace_headers_a_publish_carries_pass_the_workers_admission(
    traced: Traced, app: Celery
) -> None:
    remote = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "value")]),
    )
    parent = baggage.set_baggage(
        "tenant", "t1", trace.set_span_in_context(NonRecordingSpan(remote))
    )
    token = otel_context.attach(parent)
    try:
        with traced.tracer.start_as_current_span("client"):
            app.send_task("t.echo", args=[1])
    finally:
        otel_context.detach(token)
    with app.connection_for_read() as connection:
        message = connection.SimpleQueue(app.conf.task_default_queue).get(timeout=5)
    headers = message.headers
    (publish,) = traced.finished("apply_async/t.echo")
    trace_hex, span_hex = hex_ids(publish.get_span_context())
    assert headers["traceparent"] == f"00-{trace_hex}-{span_hex}-01"
    assert headers["tracestate"] == "vendor=value"
    assert headers["baggage"] == "tenant=t1"
    assert message_problem(headers, {}, SETTINGS) is None


def test_a_failed_publish_ends_its_span_and_gives_the_context_back(
    traced: Traced, app: Celery
) -> None:
    failed_id = str(uuid.uuid4())
    with traced.tracer.start_as_current_span("client") as client:
        with pytest.raises(EncodeError), tracing.publishing("t.echo", failed_id):
            app.send_task("t.echo", args=[object()], task_id=failed_id)
        assert trace.get_current_span() is client
        with tracing.publishing("t.echo", "next"):
            app.send_task("t.echo", args=[2], task_id="next")
    failed, sent = traced.finished("apply_async/t.echo")
    assert failed.status.status_code is StatusCode.ERROR
    assert [event.name for event in failed.events] == ["exception"]
    for publish in (failed, sent):  # both children of the client span, not of each other
        assert publish.parent is not None
        assert publish.parent.span_id == client.get_span_context().span_id


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("traceparent", 5),
        ("tracestate", ["vendor=value"]),
        ("baggage", "tenant=\ud800"),  # fails OpenTelemetry's baggage propagator
        ("baggage", "k=" + "v" * 9000),  # would be logged whole
    ],
)
def test_trace_context_that_is_not_bounded_text_is_refused(header: str, value: Any) -> None:
    headers = {"task": "t.echo", "id": str(uuid.uuid4()), header: value}
    assert message_problem(headers, {}, SETTINGS) == (
        f"{header} must be text of at most 8192 characters"
    )
