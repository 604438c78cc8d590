"""The result backend and the response queue, on the in-memory S3 and SQS stubs."""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from celery import states
from celery.exceptions import TimeoutError as CeleryTimeoutError

from cloudworker.application import CloudworkerCelery, create_app
from cloudworker.errors import InvalidMessage, InvalidNumbers
from cloudworker.objectstore import MemoryObjectStore
from cloudworker.queues import MemoryQueueService
from cloudworker.results.backend import CloudworkerBackend, result_key
from cloudworker.services import Services
from cloudworker.settings import Settings

SETTINGS = Settings(inline_max_bytes=2000, wait_seconds=1)


@pytest.fixture
def store() -> MemoryObjectStore:
    return MemoryObjectStore()


@pytest.fixture
def queues() -> MemoryQueueService:
    return MemoryQueueService()


@pytest.fixture
def app(store: MemoryObjectStore, queues: MemoryQueueService) -> CloudworkerCelery:
    services = Services(SETTINGS, store=lambda: store, queues=lambda: queues)
    return create_app(SETTINGS, services=services)


def backend_of(app: CloudworkerCelery) -> CloudworkerBackend:
    backend = app.backend
    assert isinstance(backend, CloudworkerBackend)
    return backend


def finish(
    app: CloudworkerCelery, task_id: str, result: object, state: str = states.SUCCESS
) -> None:
    """What the worker does when a task ends."""
    backend = backend_of(app)
    request = SimpleNamespace(
        reply_to=backend.reply_address(), chord=None, group=None, parent_id=None
    )
    backend.store_result(task_id, result, state, request=request)


def sent(app: CloudworkerCelery, *, waiting: bool = True) -> str:
    """What the client does when it sends a task (``waiting``: with its queue made
    already, by an earlier wait; else the queue is made on the first wait)."""
    if waiting:
        app.services.mailbox.open()
    task_id = str(uuid.uuid4())
    backend_of(app).on_task_call(None, task_id)
    return task_id


def test_result_is_stored_in_s3_and_pushed_to_the_response_queue(
    app: CloudworkerCelery, store: MemoryObjectStore, queues: MemoryQueueService
) -> None:
    task_id = sent(app)
    mailbox = app.services.mailbox
    mailbox.open()
    assert queues.tags(mailbox.url or "")["cloudworker:created"].isdigit()
    finish(app, task_id, {"count": 3})
    record = json.loads(store.objects[result_key(task_id)])
    assert record["status"] == "SUCCESS"
    assert record["result"] == {"count": 3}
    assert record["task_id"] == task_id
    assert app.AsyncResult(task_id).get(timeout=5) == {"count": 3}


def test_first_result_wins(app: CloudworkerCelery, store: MemoryObjectStore) -> None:
    task_id = sent(app)
    finish(app, task_id, "first")
    finish(app, task_id, "second")
    assert json.loads(store.objects[result_key(task_id)])["result"] == "first"
    assert app.AsyncResult(task_id).get(timeout=5) == "first"


def test_failure_reraises_the_typed_error_with_the_workers_reason(app: CloudworkerCelery) -> None:
    task_id = sent(app)
    finish(app, task_id, InvalidNumbers("input line 3: 'abc' is not an integer"), states.FAILURE)
    result = app.AsyncResult(task_id)
    with pytest.raises(InvalidNumbers, match="line 3: 'abc' is not an integer"):
        result.get(timeout=5)
    assert result.state == states.FAILURE
    assert result.successful() is False


def running(task_id: str, backend: CloudworkerBackend, *, redelivered: bool) -> SimpleNamespace:
    """The request of the worker running ``task_id``, as Celery hands it to the backend."""
    return SimpleNamespace(
        id=task_id,
        reply_to=backend.reply_address(),
        delivery_info={"redelivered": redelivered},
        chord=None,
        group=None,
        parent_id=None,
    )


def test_on_a_first_delivery_the_notice_goes_while_the_result_is_put(
    app: CloudworkerCelery, store: MemoryObjectStore, queues: MemoryQueueService
) -> None:
    task_id = sent(app)
    backend = backend_of(app)
    notified = threading.Event()
    original_send, original_put = queues.send, store.put
    order: list[str] = []

    def send(url: str, body: str) -> None:
        original_send(url, body)
        notified.set()

    def put(key: str, data: bytes, **options: Any) -> bool:
        # An S3 PUT slower than a SendMessage: it ends after the notice went, if
        # the notice was sent beside it (sent after it, it would not have).
        order.append("notice during put" if notified.wait(2) else "no notice during put")
        return original_put(key, data, **options)

    queues.send = send  # type: ignore[method-assign]
    store.put = put  # type: ignore[method-assign]
    backend.store_result(
        task_id, 5, states.SUCCESS, request=running(task_id, backend, redelivered=False)
    )
    assert order == ["notice during put"]
    assert json.loads(store.objects[result_key(task_id)])["result"] == 5  # durable on return
    assert app.AsyncResult(task_id).get(timeout=5) == 5


def test_a_notice_that_points_to_s3_waits_for_the_put(
    app: CloudworkerCelery, store: MemoryObjectStore, queues: MemoryQueueService
) -> None:
    task_id = sent(app)
    backend = backend_of(app)
    stored_when_notified: list[bool] = []
    original_send = queues.send

    def send(url: str, body: str) -> None:
        stored_when_notified.append(result_key(task_id) in store.objects)
        original_send(url, body)

    queues.send = send  # type: ignore[method-assign]
    large = "x" * (2 * SETTINGS.inline_max_bytes)  # the notice says "stored only"
    backend.store_result(
        task_id, large, states.SUCCESS, request=running(task_id, backend, redelivered=False)
    )
    assert stored_when_notified == [True]
    assert app.AsyncResult(task_id).get(timeout=5) == large


def test_a_redelivered_task_notifies_after_its_put_with_the_result_that_stood(
    app: CloudworkerCelery, store: MemoryObjectStore
) -> None:
    task_id = sent(app)
    backend = backend_of(app)
    store.put(result_key(task_id), json.dumps(  # the first run's, before it crashed
        {"task_id": task_id, "status": "SUCCESS", "result": "first", "traceback": None}
    ).encode())  # fmt: skip
    backend.store_result(
        task_id, "second", states.SUCCESS, request=running(task_id, backend, redelivered=True)
    )
    assert app.AsyncResult(task_id).get(timeout=5) == "first"


def test_a_task_this_process_did_not_send_is_read_from_s3(
    app: CloudworkerCelery, store: MemoryObjectStore
) -> None:
    task_id = str(uuid.uuid4())
    assert app.AsyncResult(task_id).state == states.PENDING
    backend_of(app).store_result(task_id, 42, states.SUCCESS, request=None)
    assert app.AsyncResult(task_id).get(timeout=5) == 42


def test_a_canvas_step_a_worker_sent_is_answered_by_its_notice_here(
    app: CloudworkerCelery, store: MemoryObjectStore
) -> None:
    sent(app)  # this process has a response queue: the caller of a chain, say
    step = str(uuid.uuid4())  # the chain's next task, sent by a worker with our reply_to
    assert not app.services.mailbox.sent(step)
    reads: list[str] = []
    original = store.get

    def counting(key: str, **options: Any) -> bytes | None:
        reads.append(key)
        return original(key, **options)

    store.get = counting  # type: ignore[method-assign]
    backend = backend_of(app)
    notice = {"task_id": step, "status": "SUCCESS", "result": 7, "traceback": None}
    threading.Timer(0.2, app.services.notifier.send, args=(
        backend.reply_address(), step, "SUCCESS", json.dumps(notice),
    )).start()  # fmt: skip
    # The notice alone answers (S3 has no record here): waiting between S3 reads
    # is listening on the response queue, not sleeping.
    assert app.AsyncResult(step).get(timeout=5) == 7
    assert reads.count(result_key(step)) <= 2


def test_pending_own_task_times_out_without_busy_polling(app: CloudworkerCelery) -> None:
    task_id = sent(app)
    result = app.AsyncResult(task_id)
    assert result.ready() is False
    with pytest.raises(CeleryTimeoutError):
        result.get(timeout=1.5)


def test_large_result_travels_through_s3_both_in_record_and_notice(
    app: CloudworkerCelery, store: MemoryObjectStore, queues: MemoryQueueService
) -> None:
    task_id = sent(app)
    image = bytes(range(256)) * 100
    finish(app, task_id, image)
    payload_keys = [k for k in store.objects if k.startswith(f"results/{task_id}/")]
    assert len(payload_keys) == 1
    assert store.objects[payload_keys[0]] == image
    assert app.AsyncResult(task_id).get(timeout=5) == image


def test_notice_for_a_huge_record_points_to_s3(app: CloudworkerCelery) -> None:
    task_id = sent(app)
    finish(app, task_id, "x" * 5000)  # a str is not claim-checked: the record itself is big
    mailbox = app.services.mailbox
    mailbox.poll(1)
    notice = mailbox.notice(task_id)
    assert notice is not None
    assert json.loads(notice) == {"task_id": task_id, "status": "SUCCESS", "stored_only": True}
    assert app.AsyncResult(task_id).get(timeout=5) == "x" * 5000


def test_notices_for_other_tasks_are_kept_for_their_waiters(app: CloudworkerCelery) -> None:
    first, second = sent(app), sent(app)
    finish(app, second, "two")
    finish(app, first, "one")
    assert app.AsyncResult(first).get(timeout=5) == "one"
    assert app.AsyncResult(second).get(timeout=5) == "two"


def test_reaped_response_queue_is_recreated(
    app: CloudworkerCelery, queues: MemoryQueueService
) -> None:
    task_id = sent(app)
    mailbox = app.services.mailbox
    queues.delete_queue(mailbox.url or "")
    assert mailbox.poll(0) == 0  # notices the loss
    other = sent(app)
    finish(app, other, "after")
    assert app.AsyncResult(other).get(timeout=5) == "after"
    assert task_id != other


def test_close_deletes_the_response_queue(
    app: CloudworkerCelery, queues: MemoryQueueService
) -> None:
    sent(app)
    mailbox = app.services.mailbox
    mailbox.open()
    assert queues.list_urls(SETTINGS.response_queue_prefix) == [mailbox.url]
    mailbox.close()
    assert queues.list_urls(SETTINGS.response_queue_prefix) == []


def test_a_process_that_only_sends_creates_no_queue(
    app: CloudworkerCelery, store: MemoryObjectStore, queues: MemoryQueueService
) -> None:
    task_id = sent(app, waiting=False)
    finish(app, task_id, "done")  # its notice goes to a queue that does not exist
    assert queues.list_urls(SETTINGS.response_queue_prefix) == []
    assert json.loads(store.objects[result_key(task_id)])["result"] == "done"


def test_the_first_wait_creates_the_queue_and_reads_earlier_tasks_from_s3(
    store: MemoryObjectStore, queues: MemoryQueueService
) -> None:
    """A task that ended before its sender had a queue is read from S3 at once: its
    notice went nowhere, and the S3 safety net would come only after a long poll."""
    settings = dataclasses.replace(SETTINGS, wait_seconds=20)
    app = create_app(
        settings, services=Services(settings, store=lambda: store, queues=lambda: queues)
    )
    early = sent(app, waiting=False)
    finish(app, early, "early")
    assert app.AsyncResult(early).get(timeout=3) == "early"
    assert queues.list_urls(settings.response_queue_prefix) == [app.services.mailbox.url]
    # Sent before the queue existed, ended after: its notice comes (pushed, S3 not read).
    app.services.mailbox.close()  # a new process, in effect: no queue again
    late = sent(app, waiting=False)
    app.services.mailbox.open()
    finish(app, late, "late")
    store.objects.pop(result_key(late))
    assert app.AsyncResult(late).get(timeout=3) == "late"


def test_reply_to_is_the_response_queue(app: CloudworkerCelery) -> None:
    assert backend_of(app).reply_address().startswith(SETTINGS.response_queue_prefix)


def test_notices_go_only_to_response_queues(
    app: CloudworkerCelery, queues: MemoryQueueService
) -> None:
    queues.create("victim", attributes={}, tags={})
    request = SimpleNamespace(reply_to="victim", chord=None, group=None, parent_id=None)
    backend_of(app).store_result("t1", 1, states.SUCCESS, request=request)
    assert list(queues.queues["victim"].messages) == []


def test_a_lost_notice_is_found_in_s3_even_while_other_notices_keep_coming(
    app: CloudworkerCelery, queues: MemoryQueueService
) -> None:
    lost = sent(app)
    backend_of(app).store_result(lost, "kept", states.SUCCESS, request=None)  # no notice
    url = app.services.mailbox.url
    assert url is not None
    stop = threading.Event()

    def busy() -> None:  # other tasks' notices arrive all the time
        while not stop.wait(0.1):
            other = {"task_id": str(uuid.uuid4()), "status": "SUCCESS", "result": 1}
            queues.send(url, json.dumps(other))

    thread = threading.Thread(target=busy)
    thread.start()
    try:
        assert app.AsyncResult(lost).get(timeout=2 * SETTINGS.wait_seconds + 1) == "kept"
    finally:
        stop.set()
        thread.join()


# -- results that cannot be stored -----------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "why"),
    [
        ({1, 2}, "is not JSON serializable"),  # Celery raises EncodeError; this was TypeError
        ("x" * 30_000, "over the limit of 20,000 bytes"),  # text was stored whole
        (["x" * 10_000] * 3, "over the limit of 20,000 bytes"),
        (b"x" * 30_000, "over the limit of 20000"),  # bytes were refused already
    ],
    ids=["a set", "text", "a list", "bytes"],
)
def test_a_result_that_cannot_be_stored_fails_its_task_with_encode_error(
    store: MemoryObjectStore, queues: MemoryQueueService, result: object, why: str
) -> None:
    from celery.app.trace import build_tracer
    from kombu.exceptions import EncodeError

    settings = dataclasses.replace(SETTINGS, max_payload_bytes=20_000)
    services = Services(settings, store=lambda: store, queues=lambda: queues)
    app = create_app(settings, services=services)

    @app.task(name="t.returns", shared=False)  # type: ignore[untyped-decorator]
    def returns() -> object:
        return result

    task_id = sent(app)
    tracer = build_tracer(returns.name, returns, app=app, eager=False, propagate=False)
    tracer(task_id, (), {}, {"id": task_id, "reply_to": backend_of(app).reply_address()})
    record = json.loads(store.objects[result_key(task_id)])
    assert record["status"] == states.FAILURE
    assert record["result"]["exc_type"] == "EncodeError"
    with pytest.raises(EncodeError, match=why):
        app.AsyncResult(task_id).get(timeout=5)


def test_a_failure_too_large_to_store_is_stored_cut(
    store: MemoryObjectStore, queues: MemoryQueueService
) -> None:
    settings = dataclasses.replace(SETTINGS, max_payload_bytes=20_000)
    services = Services(settings, store=lambda: store, queues=lambda: queues)
    app = create_app(settings, services=services)
    task_id = sent(app)
    finish(app, task_id, ValueError("y" * 50_000), states.FAILURE)
    record = store.objects[result_key(task_id)]
    assert len(record) <= 20_000
    with pytest.raises(ValueError, match="yyyy"):
        app.AsyncResult(task_id).get(timeout=5)


# -- a task's stored result is its own run's --------------------------------------------------


def run(app: CloudworkerCelery, task: Any, task_id: str, *args: Any) -> None:
    """Run ``task`` as a worker's pool process does (Celery's tracer), storing its result."""
    from celery.app.trace import build_tracer

    tracer = build_tracer(task.name, task, app=app, eager=False, propagate=False)
    tracer(task_id, args, {}, {"id": task_id, "reply_to": backend_of(app).reply_address()})


def stored_result(store: MemoryObjectStore, task_id: str) -> Any:
    return json.loads(store.objects[result_key(task_id)])["result"]


def test_a_result_written_for_another_task_gives_way_to_that_tasks_run(
    app: CloudworkerCelery, store: MemoryObjectStore
) -> None:
    """update_state(task_id=other, state=SUCCESS) and store_result(other_id) fixed the
    other task's record for good (first write wins): S3 and its caller disagreed."""

    @app.task(name="t.meddles", bind=True, shared=False)  # type: ignore[untyped-decorator]
    def meddles(self: Any, other: str) -> str:
        self.update_state(task_id=other, state=states.SUCCESS, meta="forged by a task")
        return "done"

    @app.task(name="t.honest", shared=False)  # type: ignore[untyped-decorator]
    def honest() -> str:
        return "real"

    first, second, meddler = sent(app), sent(app), sent(app)
    run(app, meddles, meddler, first)
    backend_of(app).store_result(second, "forged by a client", states.SUCCESS)
    assert stored_result(store, first) == "forged by a task"
    run(app, honest, first)
    run(app, honest, second)
    assert stored_result(store, first) == "real"
    assert stored_result(store, second) == "real"
    # Any other reader (it did not send them: it reads S3) gets the runs' results too.
    reader = Services(SETTINGS, store=lambda: store, queues=MemoryQueueService)
    assert create_app(SETTINGS, services=reader).AsyncResult(first).get(timeout=5) == "real"


def test_a_success_set_by_update_state_gives_way_to_the_return_value(
    app: CloudworkerCelery, store: MemoryObjectStore
) -> None:
    @app.task(name="t.early", bind=True, shared=False)  # type: ignore[untyped-decorator]
    def early(self: Any) -> str:
        self.update_state(state=states.SUCCESS, meta="early")
        return "returned"

    task_id = sent(app)
    run(app, early, task_id)
    assert stored_result(store, task_id) == "returned"


def test_a_runs_result_stands_against_a_later_run(
    app: CloudworkerCelery, store: MemoryObjectStore
) -> None:
    """A redelivered run (a crash, a visibility that lapsed) keeps the first run's result."""
    outcomes = iter(["first run", "second run"])

    @app.task(name="t.twice", shared=False)  # type: ignore[untyped-decorator]
    def twice() -> str:
        return next(outcomes)

    task_id = sent(app)
    run(app, twice, task_id)
    run(app, twice, task_id)
    assert stored_result(store, task_id) == "first run"


@pytest.mark.parametrize("kind", ["SystemExit", "KeyboardInterrupt", "GeneratorExit"])
def test_a_stored_failure_naming_an_exit_is_not_raised_as_one(
    app: CloudworkerCelery, store: MemoryObjectStore, kind: str
) -> None:
    """A forged FAILURE naming builtins.SystemExit made the waiting client exit."""
    task_id = sent(app)
    forged = {"exc_type": kind, "exc_module": "builtins", "exc_message": ["bye"]}
    store.put(
        result_key(task_id),
        json.dumps({"status": "FAILURE", "result": forged, "task_id": task_id}).encode(),
    )
    reader = Services(SETTINGS, store=lambda: store, queues=MemoryQueueService)
    with pytest.raises(InvalidMessage, match=f"names builtins.{kind}, which no task's failure"):
        create_app(SETTINGS, services=reader).AsyncResult(task_id).get(timeout=5)
