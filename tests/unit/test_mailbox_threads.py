"""Threads waiting on different tasks of one process share its response queue.

Each is answered on its own: one thread's long poll must not hold up another's
notice. The in-memory queues block in ``receive()`` like an SQS long poll
(until a message arrives or the wait ends); the tests order events, not times.
"""

from __future__ import annotations

import json
import queue
import threading
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from celery import states

from cloudworker.application import CloudworkerCelery, create_app
from cloudworker.objectstore import MemoryObjectStore
from cloudworker.queues import MemoryQueueService, Message
from cloudworker.results.backend import CloudworkerBackend
from cloudworker.results.mailbox import Mailbox
from cloudworker.services import Services
from cloudworker.settings import Settings

#: Long polls longer than any wait here, so a poll ends on a message or a deadline.
SETTINGS = Settings(inline_max_bytes=2000, wait_seconds=20)
#: Bounds a test's waits so that a bug fails it instead of hanging it.
PATIENCE = 30.0


class WatchedQueues(MemoryQueueService):
    """The in-memory queues, counting the receives begun and how many overlapped."""

    def __init__(self) -> None:
        super().__init__()
        self.begun = 0
        self.most_at_once = 0
        self._inside = 0
        self._watch = threading.Condition()

    def receive(
        self,
        url: str,
        *,
        wait_seconds: float,
        max_messages: int = 10,
        visibility_timeout: int | None = None,
    ) -> list[Message]:
        with self._watch:
            self.begun += 1
            self._inside += 1
            self.most_at_once = max(self.most_at_once, self._inside)
            self._watch.notify_all()
        try:
            return super().receive(
                url,
                wait_seconds=wait_seconds,
                max_messages=max_messages,
                visibility_timeout=visibility_timeout,
            )
        finally:
            with self._watch:
                self._inside -= 1

    def await_receives(self, count: int) -> None:
        """Return once ``count`` receives have begun (the last may still be waiting)."""
        with self._watch:
            assert self._watch.wait_for(lambda: self.begun >= count, PATIENCE)


@pytest.fixture
def queues() -> WatchedQueues:
    return WatchedQueues()


@pytest.fixture
def app(queues: WatchedQueues) -> CloudworkerCelery:
    store = MemoryObjectStore()
    services = Services(SETTINGS, store=lambda: store, queues=lambda: queues)
    return create_app(SETTINGS, services=services)


@pytest.fixture
def finished() -> queue.Queue[tuple[str, Any]]:
    """Where each waiting thread reports, in the order they return: (name, outcome)."""
    return queue.Queue()


def start(
    name: str, finished: queue.Queue[tuple[str, Any]], wait: Callable[[], Any]
) -> threading.Thread:
    """Run ``wait`` in a thread that reports its outcome (value or exception) to ``finished``."""

    def run() -> None:
        try:
            outcome: Any = wait()
        except Exception as exc:  # reported to the test, which checks it
            outcome = exc
        finished.put((name, outcome))

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def worker_side(app: CloudworkerCelery) -> tuple[CloudworkerBackend, SimpleNamespace]:
    """The backend, and a request as a worker has it for a task this process sent."""
    backend = app.backend
    assert isinstance(backend, CloudworkerBackend)
    request = SimpleNamespace(
        reply_to=backend.reply_address(), chord=None, group=None, parent_id=None
    )
    return backend, request


def two_expected(queues: WatchedQueues) -> tuple[Mailbox, str, str, str]:
    """A mailbox expecting two tasks, their ids and the queue's URL."""
    mailbox = Mailbox(lambda: queues, SETTINGS)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    mailbox.open()  # the queue a waiting client has
    mailbox.expect(first)
    mailbox.expect(second)
    url = mailbox.url
    assert url is not None
    return mailbox, first, second, url


def notice(task_id: str, result: object) -> str:
    return json.dumps({"task_id": task_id, "status": states.SUCCESS, "result": result})


def test_a_waiting_thread_does_not_delay_another_threads_answer(
    app: CloudworkerCelery, queues: WatchedQueues, finished: queue.Queue[tuple[str, Any]]
) -> None:
    """The reported bug: A's long poll for a slow task held back B's quick answer.

    B asks once its notice is filed and A polls on for its own; A's notice then
    comes before A's timeout. (Before the fix A held the lock through each poll:
    B got in only when A gave up, with a timeout.)
    """
    backend, request = worker_side(app)
    slow, quick = str(uuid.uuid4()), str(uuid.uuid4())
    backend.on_task_call(None, slow)
    backend.on_task_call(None, quick)

    start("A", finished, lambda: app.AsyncResult(slow).get(timeout=5))
    queues.await_receives(1)  # A is the poller
    backend.store_result(quick, "quick", states.SUCCESS, request=request)  # the worker
    queues.await_receives(2)  # A's poll filed it; A polls on for its own notice
    start("B", finished, lambda: app.AsyncResult(quick).get(timeout=PATIENCE))
    assert finished.get(timeout=PATIENCE) == ("B", "quick")
    backend.store_result(slow, "slow", states.SUCCESS, request=request)
    assert finished.get(timeout=PATIENCE) == ("A", "slow")  # A was still waiting


def test_wait_returns_a_notice_filed_by_another_threads_poll(
    queues: WatchedQueues, finished: queue.Queue[tuple[str, Any]]
) -> None:
    mailbox, first, second, url = two_expected(queues)

    start("A", finished, lambda: mailbox.wait(first, PATIENCE))
    queues.await_receives(1)  # A is the poller; B sleeps until a poll files a notice
    start("B", finished, lambda: mailbox.wait(second, PATIENCE))
    queues.send(url, notice(second, 2))
    assert finished.get(timeout=PATIENCE) == ("B", notice(second, 2))
    queues.send(url, notice(first, 1))
    assert finished.get(timeout=PATIENCE) == ("A", notice(first, 1))  # A was still waiting
    assert queues.most_at_once == 1  # the threads took turns to poll


def test_the_poller_role_passes_to_a_waiter_when_the_poller_leaves(
    queues: WatchedQueues, finished: queue.Queue[tuple[str, Any]]
) -> None:
    mailbox, first, second, url = two_expected(queues)

    start("A", finished, lambda: mailbox.wait(first, 1))  # gives up with nothing
    queues.await_receives(1)
    start("B", finished, lambda: mailbox.wait(second, PATIENCE))
    assert finished.get(timeout=PATIENCE) == ("A", None)
    queues.send(url, notice(second, 2))  # only B can receive it now
    assert finished.get(timeout=PATIENCE) == ("B", notice(second, 2))


def test_reading_a_state_does_not_wait_for_another_threads_long_poll(
    app: CloudworkerCelery, queues: WatchedQueues, finished: queue.Queue[tuple[str, Any]]
) -> None:
    backend, request = worker_side(app)
    slow, other = str(uuid.uuid4()), str(uuid.uuid4())
    backend.on_task_call(None, slow)
    backend.on_task_call(None, other)

    start("A", finished, lambda: app.AsyncResult(slow).get(timeout=5))
    queues.await_receives(1)  # A is in its long poll
    start("B", finished, lambda: app.AsyncResult(other).state)
    assert finished.get(timeout=PATIENCE) == ("B", states.PENDING)
    backend.store_result(slow, "slow", states.SUCCESS, request=request)
    assert finished.get(timeout=PATIENCE) == ("A", "slow")  # A was still waiting


def test_the_poller_has_its_answer_before_the_notice_is_deleted(
    queues: WatchedQueues, finished: queue.Queue[tuple[str, Any]]
) -> None:
    mailbox, first, _, url = two_expected(queues)
    release, deleted = threading.Event(), threading.Event()
    original = queues.delete_messages

    def slow_delete(url: str, receipts: Any) -> None:
        assert release.wait(PATIENCE)
        original(url, receipts)
        deleted.set()

    queues.delete_messages = slow_delete  # type: ignore[method-assign]
    start("A", finished, lambda: mailbox.wait(first, PATIENCE))
    queues.await_receives(1)
    queues.send(url, notice(first, 1))
    # The answer does not wait for the DeleteMessageBatch (a thread sends it after).
    assert finished.get(timeout=PATIENCE) == ("A", notice(first, 1))
    assert not deleted.is_set()
    release.set()
    assert deleted.wait(PATIENCE)
