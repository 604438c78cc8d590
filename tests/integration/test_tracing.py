"""A traced client's send and the task's run on a worker are one trace (OpenTelemetry).

This process traces its sends with the SDK into an in-memory exporter; the worker
loads tests/support/tracing.py, which appends each span it finishes to a file
as a JSON line. The test compares ids: the worker's ``run/<task>`` span must be
in the trace of the client's span and the child of the publish span of its own
task (found by task id), whether the arguments went inline, through S3, or in
one SQS batch with other traces' tasks. An inbox object is a trace of its own.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Span, Tracer

from cloudworker.codec import ClaimCheck, PayloadRef
from cloudworker.keys import task_payload_prefix
from deploy import local
from tasks import batch_sends
from tasks.definitions import TaskSet, register
from tests.integration.conftest import LocalStack
from tests.support.inbox import jpeg, wait_for_object
from tests.support.otel import instrumented_celery
from tests.support.waiting import eventually
from tests.support.workers import Workers

pytestmark = pytest.mark.integration

QUEUE = "tracing"
WORKER = "traced1"
#: The task id attribute of Celery's publish and run spans.
TASK_ID = "messaging.message.id"


@dataclass
class Client:
    """This process's tracer and the spans it finished."""

    tracer: Tracer
    exporter: InMemorySpanExporter

    def publish_span(self, task_id: str) -> ReadableSpan:
        """The span of this process's publish of task ``task_id``."""
        found = [
            span
            for span in self.exporter.get_finished_spans()
            if span.name.startswith("apply_async/")
            and (span.attributes or {}).get(TASK_ID) == task_id
        ]
        assert len(found) == 1, found
        return found[0]


@dataclass
class Fleet:
    """The traced worker, the tasks sent to its queue, and the file of its spans."""

    workers: Workers
    tasks: TaskSet
    spans_file: Path

    def spans(self) -> list[dict[str, Any]]:
        """Every span the worker has finished so far (complete lines only)."""
        if not self.spans_file.exists():
            return []
        *complete, _ = self.spans_file.read_text(encoding="utf-8").split("\n")
        return [json.loads(line) for line in complete if line]

    def wait_for(
        self, wanted: Callable[[dict[str, Any]], bool], count: int
    ) -> list[dict[str, Any]]:
        """The worker's spans ``wanted`` picks, once there are ``count`` of them."""
        eventually(
            lambda: sum(map(wanted, self.spans())) >= count,
            interval=0.2,
            what=f"{count} of the spans wanted",
        )
        spans = [span for span in self.spans() if wanted(span)]
        assert len(spans) == count, (spans, self.spans())
        return spans

    def run_span(self, task_id: str) -> dict[str, Any]:
        """The worker's span of running task ``task_id``."""
        (span,) = self.wait_for(
            lambda span: (
                span["name"].startswith("run/") and span["attributes"].get(TASK_ID) == task_id
            ),
            1,
        )
        return span


def ids(span: Span | ReadableSpan) -> tuple[str, str]:
    """(trace id, span id) of ``span`` in hexadecimal, as the worker's records have them."""
    context = span.get_span_context()
    assert context is not None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """This process's Celery instrumentation, tracing into its own in-memory exporter.

    The provider is handed to the instrumentation rather than set globally (which
    OpenTelemetry allows once per process); the instrumentation is put back as it
    was afterwards.
    """
    with instrumented_celery() as (provider, exporter):
        yield Client(provider.get_tracer(__name__), exporter)


@pytest.fixture(scope="module")
def fleet(local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """A worker on a queue of its own with tracing loaded; it also serves the inbox."""
    workers = Workers.on_queue(local_stack, QUEUE, visibility=60, wait_seconds=2)
    spans_file = tmp_path_factory.mktemp("tracing") / "worker-spans.jsonl"
    try:
        workers.start(
            WORKER,
            wait_ready=True,
            include=("tests.support.tracing",),
            env={
                "CLOUDWORKER_TEST_TRACE_FILE": str(spans_file),
                "CLOUDWORKER_INBOX_ENABLED": "true",
            },
        )
        yield Fleet(workers, register(workers.app), spans_file)
    finally:
        workers.close(WORKER)


def assert_one_trace(root: Span, publish: ReadableSpan, run: dict[str, Any]) -> None:
    """The publish is the child of ``root``, the worker's run the child of the publish."""
    trace, root_id = ids(root)
    publish_trace, publish_id = ids(publish)
    assert publish.parent is not None
    assert (publish_trace, format(publish.parent.span_id, "016x")) == (trace, root_id)
    assert (run["trace_id"], run["parent_id"]) == (trace, publish_id)
    assert run["kind"] == "CONSUMER"


def test_a_delay_and_its_run_on_the_worker_are_one_trace(client: Client, fleet: Fleet) -> None:
    with client.tracer.start_as_current_span("client") as client_span:
        result = fleet.tasks.compute_stats.delay([3, 1, 2])
    assert result.get(timeout=60)["median"] == 2
    assert_one_trace(client_span, client.publish_span(result.id), fleet.run_span(result.id))


def test_claim_checked_arguments_keep_the_trace(
    client: Client, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked_in: list[PayloadRef] = []
    check_in = ClaimCheck.check_in

    def recording(self: ClaimCheck, data: bytes, *, is_json: bool = False) -> PayloadRef:
        ref = check_in(self, data, is_json=is_json)
        checked_in.append(ref)
        return ref

    monkeypatch.setattr(ClaimCheck, "check_in", recording)
    numbers = list(range(100_000))
    assert len(json.dumps(numbers)) > fleet.workers.app.services.settings.inline_max_bytes
    with client.tracer.start_as_current_span("client") as client_span:
        result = fleet.tasks.compute_stats.delay(numbers)
    assert result.get(timeout=120)["count"] == 100_000
    # The arguments went through S3, under the task's own prefix.
    assert any(ref.key.startswith(task_payload_prefix(result.id)) for ref in checked_in)
    assert_one_trace(client_span, client.publish_span(result.id), fleet.run_span(result.id))


def test_tasks_sent_in_one_batch_each_keep_their_own_trace(client: Client, fleet: Fleet) -> None:
    sent = []
    with batch_sends() as batch:
        for n in range(3):
            with client.tracer.start_as_current_span(f"input {n}") as root:
                sent.append((root, fleet.tasks.compute_stats.delay([n, n + 1, n + 2])))
    assert (batch.messages, batch.requests) == (3, 1)
    assert [result.get(timeout=60)["median"] for _, result in sent] == [1, 2, 3]
    assert len({ids(root)[0] for root, _ in sent}) == 3
    for root, result in sent:
        assert_one_trace(root, client.publish_span(result.id), fleet.run_span(result.id))


@pytest.fixture
def inbox_to_traced_worker(local_stack: LocalStack, fleet: Fleet) -> Iterator[None]:
    """The session's worker stopped, so that the traced one takes every inbox event.

    Both consume the inbox-events queue; the session's worker is started again
    afterwards (``local.up`` starts only what is missing), as later tests need it.
    """
    local.stop_process(local_stack.stack, "worker1")
    try:
        yield
    finally:
        local.up(local_stack.stack, workers=1, concurrency=2, flower=False)


@pytest.mark.usefixtures("inbox_to_traced_worker")
def test_each_inbox_object_is_a_trace_of_its_own(local_stack: LocalStack, fleet: Fleet) -> None:
    s3, bucket = local_stack.client("s3"), local_stack.settings.bucket
    folder = f"tracing-{uuid.uuid4().hex[:8]}"
    keys = [f"inbox/{folder}/one.jpg", f"inbox/{folder}/two.jpg"]
    for key, color in zip(keys, [(200, 30, 30), (30, 200, 30)], strict=True):
        s3.put_object(Bucket=bucket, Key=key, Body=jpeg(color))
    for key in keys:
        wait_for_object(s3, bucket, key.replace("inbox/", "outbox/", 1), timeout=60)
    names = {f"inbox {key}": key for key in keys}
    roots = fleet.wait_for(lambda span: span["name"] in names, 2)
    for root in roots:
        assert root["parent_id"] is None  # a root: a trace of its own
        assert root["kind"] == "CONSUMER"
        assert root["attributes"] == {"aws.s3.bucket": bucket, "aws.s3.key": names[root["name"]]}
    traces = {root["trace_id"]: root for root in roots}
    assert len(traces) == 2
    # Each trace holds its object's task: the inbox span's publish, and its run.
    task_spans = fleet.wait_for(
        lambda span: (
            span["trace_id"] in traces and span["name"].endswith("/tasks.process_inbox_object")
        ),
        4,
    )
    for trace, root in traces.items():
        (publish,) = [s for s in task_spans if s["trace_id"] == trace and s["kind"] == "PRODUCER"]
        (run,) = [s for s in task_spans if s["trace_id"] == trace and s["kind"] == "CONSUMER"]
        assert publish["name"] == "apply_async/tasks.process_inbox_object"
        assert run["name"] == "run/tasks.process_inbox_object"
        assert publish["parent_id"] == root["span_id"]
        assert run["parent_id"] == publish["span_id"]
