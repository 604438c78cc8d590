"""States before the end: throttled writes, their filing in the mailbox, and reading them.

Pure logic with the in-memory stubs; the integration tests (test_task_states.py)
run the same through real workers. Times here are bounds on waits for a thread,
never assertions on how long something took.
"""

from __future__ import annotations

import json
import threading
import uuid
from types import SimpleNamespace
from typing import Any

from celery import states

from cloudworker.application import CloudworkerCelery, create_app
from cloudworker.keys import result_key, state_key
from cloudworker.objectstore import MemoryObjectStore
from cloudworker.queues import MemoryQueueService
from cloudworker.results.backend import CloudworkerBackend
from cloudworker.results.mailbox import Mailbox
from cloudworker.results.progress import StateWriter
from cloudworker.settings import Settings

PATIENCE = 30.0


class Written:
    """A write function that records what it was given and signals each write."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, str, str]] = []
        self.event = threading.Event()

    def __call__(self, task_id: str, reply_to: str | None, state: str, record: str) -> None:
        self.calls.append((task_id, reply_to, state, record))
        self.event.set()


def test_ten_thousand_updates_within_the_interval_are_one_write_of_the_latest() -> None:
    written = Written()
    writer = StateWriter(written, interval=3600)
    for step in range(10_000):
        writer.update("t1", "resp-x", "PROGRESS", json.dumps({"current": step}))
    assert written.calls == []  # nothing is due for an hour
    writer.flush()
    assert written.calls == [("t1", "resp-x", "PROGRESS", json.dumps({"current": 9999}))]
    assert (writer.updates, writer.writes) == (10_000, 1)


def test_a_task_that_ends_within_the_interval_writes_no_state() -> None:
    written = Written()
    writer = StateWriter(written, interval=3600)
    writer.update("t1", None, states.STARTED, "{}")
    writer.finish("t1")
    writer.flush()
    assert written.calls == []


def test_a_waiting_state_is_written_once_its_interval_passed() -> None:
    written = Written()
    writer = StateWriter(written, interval=0.01)
    writer.update("t1", None, states.STARTED, "a")
    writer.update("t1", None, "PROGRESS", "b")
    assert written.event.wait(PATIENCE)
    assert written.calls == [("t1", None, "PROGRESS", "b")]


def test_a_failing_write_does_not_stop_the_writer() -> None:
    calls: list[str] = []
    done = threading.Event()

    def write(task_id: str, reply_to: str | None, state: str, record: str) -> None:
        calls.append(task_id)
        if task_id == "bad":
            raise OSError("endpoint down")
        done.set()

    writer = StateWriter(write, interval=0.01)
    writer.update("bad", None, states.STARTED, "{}")
    writer.update("good", None, states.STARTED, "{}")
    assert done.wait(PATIENCE)
    assert sorted(calls) == ["bad", "good"]
    assert writer.writes == 1


def state(task_id: str, name: str, **extra: Any) -> str:
    return json.dumps({"task_id": task_id, "status": name, "result": extra or None})


def test_the_mailbox_keeps_the_latest_state_and_never_replaces_the_end() -> None:
    queues = MemoryQueueService()
    mailbox = Mailbox(lambda: queues, Settings())
    mailbox.open()  # the queue a waiting client has
    mailbox.expect("t1")
    url = mailbox.url
    assert url is not None
    queues.send(url, state("t1", states.STARTED))
    mailbox.poll(0)
    assert mailbox.notice("t1") is None
    assert mailbox.state_notice("t1") == state("t1", states.STARTED)
    assert mailbox.wait("t1", 0, states_after="") == state("t1", states.STARTED)
    assert mailbox.wait("t1", 0, states_after=state("t1", states.STARTED)) is None
    queues.send(url, state("t1", states.SUCCESS))
    mailbox.poll(0)
    queues.send(url, state("t1", "PROGRESS", current=5))  # came late
    mailbox.poll(0)
    assert mailbox.notice("t1") == state("t1", states.SUCCESS)
    assert mailbox.state_notice("t1") is None


def test_a_state_stored_from_outside_the_task_is_written_at_once(
    memory_app: CloudworkerCelery, memory_store: MemoryObjectStore
) -> None:
    """As Celery's suite does: ``store_result(id, meta, STARTED)`` from a client."""
    task_id = str(uuid.uuid4())
    memory_app.backend.store_result(task_id, {"hostname": "other@host"}, states.STARTED)
    assert state_key(task_id) in memory_store.objects
    other = create_app(memory_app.services.settings, services=memory_app.services)
    assert other.AsyncResult(task_id).state == states.STARTED
    assert other.AsyncResult(task_id).info == {"hostname": "other@host"}


def test_the_running_tasks_own_states_wait_and_its_result_supersedes_them(
    memory_app: CloudworkerCelery, memory_store: MemoryObjectStore
) -> None:
    backend = memory_app.backend
    assert isinstance(backend, CloudworkerBackend)
    task_id = str(uuid.uuid4())
    request = SimpleNamespace(
        id=task_id, reply_to=None, chord=None, group=None, parent_id=None, children=[]
    )
    for step in range(100):
        backend.store_result(task_id, {"current": step}, "PROGRESS", request=request)
    assert state_key(task_id) not in memory_store.objects  # waiting, 100 states in one
    assert memory_app.AsyncResult(task_id).state == states.PENDING
    memory_app.services.states.flush()
    assert memory_app.AsyncResult(task_id).state == "PROGRESS"
    assert memory_app.AsyncResult(task_id).info == {"current": 99}
    backend.store_result(task_id, 7, states.SUCCESS, request=request)
    assert result_key(task_id) in memory_store.objects
    fresh = create_app(memory_app.services.settings, services=memory_app.services)
    assert fresh.AsyncResult(task_id).get(timeout=PATIENCE) == 7
