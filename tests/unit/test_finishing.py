"""Finishing a success in the background: which tasks, and the ack only once stored."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from celery import signals, states
from celery.app.task import Context

from cloudworker.application import CloudworkerCelery, create_app
from cloudworker.objectstore import MemoryObjectStore
from cloudworker.queues import MemoryQueueService
from cloudworker.results import finishing
from cloudworker.results.backend import result_key
from cloudworker.results.finishing import ResultFinisher, finished_in_background
from cloudworker.services import Services
from cloudworker.settings import Settings
from cloudworker.worker import request as worker_request

SETTINGS = Settings(inline_max_bytes=2000, wait_seconds=1)
URL = "https://sqs.example/123/cloudworker-tasks"


class Deletes(MemoryQueueService):
    """The memory queues, with every deletion recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.deleted: list[tuple[str, list[str]]] = []
        self.changed = threading.Condition()

    def delete_messages(self, url: str, receipts: Sequence[str]) -> None:
        with self.changed:
            self.deleted.append((url, list(receipts)))
            self.changed.notify_all()

    def wait_deleted(self, count: int, timeout: float = 5) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.deleted) >= count, timeout)


def received(task_id: str, receipt: str = "r-1", **fields: Any) -> Context:
    """A task's context in the pool process, for a message received from SQS."""
    properties = {
        "delivery_info": {"sqs_queue": URL, "redelivered": False},
        "delivery_tag": receipt,
    }
    return Context(
        id=task_id,
        task="t.add",
        properties=properties,
        delivery_info={"redelivered": False},
        reply_to=None,
        **fields,
    )


def held(release: threading.Event) -> Callable[[], None]:
    """A job that ends once ``release`` is set."""

    def run() -> None:
        assert release.wait(5)

    return run


@pytest.fixture
def queues() -> Deletes:
    return Deletes()


@pytest.fixture
def store() -> MemoryObjectStore:
    return MemoryObjectStore()


@pytest.fixture
def app(store: MemoryObjectStore, queues: Deletes) -> Iterator[CloudworkerCelery]:
    services = Services(SETTINGS, store=lambda: store, queues=lambda: queues)
    app = create_app(SETTINGS, services=services)

    @app.task(name="t.add", shared=False)  # type: ignore[untyped-decorator]
    def add(x: int, y: int) -> int:
        return x + y

    yield app
    services.finisher.close(5)


# -- which tasks ---------------------------------------------------------------------------


def test_a_received_success_is_finished_in_the_background(app: CloudworkerCelery) -> None:
    task = app.tasks["t.add"]
    assert finished_in_background(task, received("a"), SETTINGS) == (URL, "r-1")


@pytest.mark.parametrize(
    ("why", "context_fields", "task_fields", "settings_fields"),
    [
        ("a chord's header part", {"chord": {"task": "b"}}, {}, {}),
        ("run eagerly", {"is_eager": True}, {}, {}),
        ("its result ignored", {"ignore_result": True}, {}, {}),
        ("acknowledged early", {}, {"acks_late": False}, {}),
        ("not from SQS", {"properties": {}}, {}, {}),
        ("turned off", {}, {}, {"background_results": False}),
    ],
)
def test_is_finished_as_in_celery_when(
    app: CloudworkerCelery,
    why: str,
    context_fields: dict[str, Any],
    task_fields: dict[str, Any],
    settings_fields: dict[str, Any],
) -> None:
    task = app.tasks["t.add"]
    context = received("a")
    context.update(context_fields)
    for name, value in task_fields.items():
        setattr(task, name, value)
    settings = dataclasses.replace(SETTINGS, **settings_fields)
    assert finished_in_background(task, context, settings) is None, why


def test_the_main_process_makes_the_same_test_on_its_request(app: CloudworkerCelery) -> None:
    message = SimpleNamespace(delivery_info={"sqs_queue": URL}, delivery_tag="r-9")
    request = SimpleNamespace(message=message, chord=None, ignore_result=False, is_eager=False)
    assert finished_in_background(app.tasks["t.add"], request, SETTINGS) == (URL, "r-9")
    request.chord = {"task": "b"}
    assert finished_in_background(app.tasks["t.add"], request, SETTINGS) is None


# -- the finisher ----------------------------------------------------------------------------


def test_the_message_is_deleted_only_once_its_result_is_stored(queues: Deletes) -> None:
    finisher = ResultFinisher(lambda: queues)
    release = threading.Event()
    finisher.submit("t1", held(release))
    finisher.acknowledge_after("t1", URL, "r-1")
    assert not queues.wait_deleted(1, timeout=0.5)  # longer than the acks' linger
    release.set()
    assert queues.wait_deleted(1)
    assert queues.deleted == [(URL, ["r-1"])]
    finisher.close(5)


def test_a_result_that_could_not_be_stored_leaves_its_message_for_sqs(
    queues: Deletes, caplog: pytest.LogCaptureFixture
) -> None:
    finisher = ResultFinisher(lambda: queues)

    def fail() -> None:
        raise OSError("S3 said no")

    finisher.submit("t1", fail)
    finisher.acknowledge_after("t1", URL, "r-1")
    finisher.acknowledge_after("t2", URL, "r-2")  # nothing pending: at once
    finisher.close(5)
    assert queues.deleted == [(URL, ["r-2"])]
    assert "t1: its result could not be stored (S3 said no)" in caplog.text


def test_acknowledgements_ready_together_share_a_request(queues: Deletes) -> None:
    finisher = ResultFinisher(lambda: queues)
    for i in range(3):
        finisher.acknowledge_after(f"t{i}", URL, f"r-{i}")
    finisher.close(5)
    assert queues.deleted == [(URL, ["r-0", "r-1", "r-2"])]


def test_a_pool_process_waits_for_s3_once_enough_results_are_pending(
    queues: Deletes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(finishing, "_MAX_PENDING", 2)
    finisher = ResultFinisher(lambda: queues)
    release = threading.Event()
    for i in range(2):
        finisher.submit(f"t{i}", held(release))
    third = threading.Thread(target=finisher.submit, args=("t2", lambda: None))
    third.start()
    third.join(0.3)
    assert third.is_alive()  # no slot until a pending result is stored
    release.set()
    third.join(5)
    assert not third.is_alive()
    finisher.close(5)


# -- through the backend and Celery's signal ---------------------------------------------------


def test_a_success_returns_before_its_put_and_is_acknowledged_after_it(
    app: CloudworkerCelery, store: MemoryObjectStore, queues: Deletes
) -> None:
    task, task_id = app.tasks["t.add"], str(uuid.uuid4())
    release = threading.Event()
    original_put = store.put

    def slow_put(key: str, data: bytes, **options: Any) -> bool:
        assert release.wait(5)
        return original_put(key, data, **options)

    store.put = slow_put  # type: ignore[method-assign]
    context = received(task_id, receipt="r-7")
    task.request_stack.push(context)
    try:
        task.backend.store_result(task_id, 5, states.SUCCESS, request=context)
        # Celery's trace sends task_postrun, in the pool process, once the task is done.
        signals.task_postrun.send(sender=task, task_id=task_id, task=task, state=states.SUCCESS)
    finally:
        task.request_stack.pop()
    assert result_key(task_id) not in store.objects  # returned while the PUT waits
    assert not queues.wait_deleted(1, timeout=0.5)
    release.set()
    assert queues.wait_deleted(1)
    assert queues.deleted == [(URL, ["r-7"])]
    assert json.loads(store.objects[result_key(task_id)])["result"] == 5


def test_a_failure_is_stored_before_the_pool_process_goes_on(
    app: CloudworkerCelery, store: MemoryObjectStore, queues: Deletes
) -> None:
    task, task_id = app.tasks["t.add"], str(uuid.uuid4())
    context = received(task_id)
    task.request_stack.push(context)
    try:
        task.backend.mark_as_failure(task_id, ValueError("no"), request=context)
        signals.task_postrun.send(sender=task, task_id=task_id, task=task, state=states.FAILURE)
    finally:
        task.request_stack.pop()
    assert json.loads(store.objects[result_key(task_id)])["status"] == states.FAILURE
    time.sleep(0.5)  # longer than the acks' linger: the main process acknowledges a failure
    assert queues.deleted == []


def test_a_task_finished_as_in_celery_makes_no_finisher(app: CloudworkerCelery) -> None:
    task, task_id = app.tasks["t.add"], str(uuid.uuid4())
    context = received(task_id)
    context.properties = {}  # not from SQS: an eager run, a client process
    task.request_stack.push(context)
    try:
        signals.task_postrun.send(sender=task, task_id=task_id, task=task, state=states.SUCCESS)
    finally:
        task.request_stack.pop()
    assert "finisher" not in app.services._made  # no threads, no outbox in that process


# -- a refusal before the pool runs the task --------------------------------------------------


class Rejects:
    """A channel that records what was rejected (kombu's Message.reject calls it)."""

    def __init__(self) -> None:
        self.rejected: list[tuple[str, bool]] = []

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        self.rejected.append((delivery_tag, requeue))


def test_a_refusal_before_the_pool_gives_the_slot_back_and_dead_letters_it(
    app: CloudworkerCelery,
) -> None:
    """Celery's revocation check raised TypeError on a stamp name that is a list; Celery
    gives the worker's pool slot back only for TaskRevokedError, so the slot was kept."""
    from celery.exceptions import TaskRevokedError
    from kombu.message import Message

    from cloudworker.queues import REASON_KEY

    task_id = str(uuid.uuid4())
    channel = Rejects()
    message = Message(  # type: ignore[no-untyped-call]
        body=json.dumps([[1, 2], {}, {}]),
        delivery_tag="r-5",
        content_type="application/json",
        content_encoding="utf-8",
        delivery_info={"sqs_queue": URL},
        properties={"reply_to": app.backend.reply_address(), "correlation_id": task_id},
        headers={"task": "t.add", "id": task_id, "stamped_headers": [[1]], "stamps": {}},
        channel=channel,
    )
    request = worker_request.Request(
        message,
        app=app,
        task=app.tasks["t.add"],
        on_reject=lambda _log, _errors, requeue: message.reject(requeue=requeue),  # type: ignore[no-untyped-call]
    )
    pool = SimpleNamespace(apply_async=lambda *a, **k: pytest.fail("the pool ran it"))
    app.services.mailbox.open()  # the queue a waiting client has
    app.services.mailbox.expect(task_id)
    with pytest.raises(TaskRevokedError):  # the one error after which Celery gives it back
        request.execute_using_pool(pool)
    assert channel.rejected == [("r-5", False)]  # to the dead-letter queue...
    assert "TypeError" in message.delivery_info[REASON_KEY]  # ...with the reason
    meta = app.backend.get_task_meta(task_id)
    assert meta["status"] == states.FAILURE
    assert "refused before it ran" in str(meta["result"])
