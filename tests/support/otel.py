"""Celery instrumented into a tracer provider of the test's own, then put back as it was.

OpenTelemetry lets a process set its global provider once, so the tests hand theirs
to the instrumentation instead; the unit and the integration tests of tracing share
this set-up.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@contextlib.contextmanager
def instrumented_celery() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """Celery traced into a new provider whose spans an in-memory exporter keeps."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
    was_instrumented = instrumentor.is_instrumented_by_opentelemetry
    if was_instrumented:
        instrumentor.uninstrument()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield provider, exporter
    finally:
        instrumentor.uninstrument()
        if was_instrumented:
            instrumentor.instrument()
        provider.shutdown()
