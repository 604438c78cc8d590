"""Tracing for test workers, loaded with ``--include=tests.support.tracing``.

Importing it sets this process's TracerProvider (OpenTelemetry's SDK): a
:class:`SimpleSpanProcessor` into an :class:`InMemorySpanExporter`, and a span
processor that appends each finished span as one JSON line to the file named by
``CLOUDWORKER_TEST_TRACE_FILE``, so that a test reads the worker's spans from
another process. Both are synchronous (no thread), so the worker's pool processes
forked after the import keep them working. The worker instruments Celery itself
(:mod:`cloudworker.tracing`); this only gives it somewhere to put the spans.
"""

from __future__ import annotations

import json
import os
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

#: The environment variable naming the file the spans are appended to.
TRACE_FILE_VARIABLE = "CLOUDWORKER_TEST_TRACE_FILE"


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """What a test checks of a span, as JSON: ids in hexadecimal, as W3C headers write them."""
    context, parent = span.get_span_context(), span.parent
    assert context is not None
    return {
        "name": span.name,
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "parent_id": format(parent.span_id, "016x") if parent is not None else None,
        "kind": span.kind.name,
        "attributes": dict(span.attributes or {}),
    }


class JsonLinesProcessor(SpanProcessor):
    """Appends each finished span to ``path`` as one JSON line, in one write.

    Every process of the worker appends to the same file; a line in a single
    ``O_APPEND`` write is never interleaved with another process's.
    """

    def __init__(self, path: str) -> None:
        self._path = path

    def on_end(self, span: ReadableSpan) -> None:
        line = json.dumps(span_record(span), default=str) + "\n"
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)


exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
if os.environ.get(TRACE_FILE_VARIABLE):
    provider.add_span_processor(JsonLinesProcessor(os.environ[TRACE_FILE_VARIABLE]))
trace.set_tracer_provider(provider)
