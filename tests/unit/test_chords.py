"""The chord count in S3 (tasks/chords.py), with the in-memory store: who fires, and once.

The body's sending is replaced by a recorder; the integration tests
(tests/integration/test_canvas.py) run whole chords through real workers.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from celery import states

from config import Settings
from tasks.application import CloudworkerCelery, create_app
from tasks.backend import CloudworkerBackend
from tasks.chords import ChordJoin
from tasks.keys import chord_prefix
from tasks.objectstore import MemoryObjectStore
from tasks.queues import MemoryQueueService
from tasks.services import Services


@pytest.fixture
def store() -> MemoryObjectStore:
    return MemoryObjectStore()


@pytest.fixture
def app(store: MemoryObjectStore) -> CloudworkerCelery:
    queues = MemoryQueueService()
    services = Services(Settings(), store=lambda: store, queues=lambda: queues)
    return create_app(Settings(), services=services)


class Recording(ChordJoin):
    """A ChordJoin that records each firing instead of sending the body."""

    def __init__(self, backend: CloudworkerBackend) -> None:
        super().__init__(backend)
        self.fired: list[str] = []

    def _fire(self, group_id: str, request: Any) -> None:
        self.fired.append(request.id)


def part(group_id: str, task_id: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        id=task_id or str(uuid.uuid4()), group=group_id, chord={"task": "body"}, reply_to=None
    )


def test_only_the_last_part_fires_and_a_repeated_part_counts_once(
    app: CloudworkerCelery, store: MemoryObjectStore
) -> None:
    backend = app.backend
    assert isinstance(backend, CloudworkerBackend)
    join = Recording(backend)
    group_id = str(uuid.uuid4())
    join.set_size(group_id, 3)
    first, second, third = part(group_id), part(group_id), part(group_id)
    join.part_returned(first)
    join.part_returned(first)  # redelivered after a crash: the same marker again
    join.part_returned(second)
    assert join.fired == []
    join.part_returned(third)
    assert join.fired == [third.id]
    # The markers are gone: the same part run once more does not fire again.
    assert not any("done-" in key for key in store.objects)
    join.part_returned(third)
    assert join.fired == [third.id]


def test_a_part_whose_size_is_not_written_yet_does_not_fire(app: CloudworkerCelery) -> None:
    backend = app.backend
    assert isinstance(backend, CloudworkerBackend)
    join = Recording(backend)
    group_id = str(uuid.uuid4())
    join.part_returned(part(group_id))  # Celery writes the size before sending the last part
    assert join.fired == []


def test_add_to_chord_waits_for_one_more_part(app: CloudworkerCelery) -> None:
    backend = app.backend
    assert isinstance(backend, CloudworkerBackend)
    join = Recording(backend)
    group_id = str(uuid.uuid4())
    join.set_size(group_id, 1)
    extra = part(group_id)
    join.add(group_id, extra.id)
    join.part_returned(part(group_id))
    assert join.fired == []
    join.part_returned(extra)
    assert join.fired == [extra.id]


def test_the_claim_is_won_once_and_recognised_by_its_owner(
    app: CloudworkerCelery, store: MemoryObjectStore
) -> None:
    backend = app.backend
    assert isinstance(backend, CloudworkerBackend)
    join = ChordJoin(backend)
    prefix = chord_prefix(str(uuid.uuid4()))
    assert join._claim(prefix, "part-a") is True
    assert join._claim(prefix, "part-b") is False  # a concurrent last part
    assert join._claim(prefix, "part-a") is True  # part-a redelivered before it sent the body


def test_a_saved_group_is_restored_in_order(app: CloudworkerCelery) -> None:
    ids = [str(uuid.uuid4()) for _ in range(5)]
    group_id = str(uuid.uuid4())
    saved = app.GroupResult(group_id, [app.AsyncResult(i) for i in ids])
    saved.save()
    restored = app.GroupResult.restore(group_id)
    assert [r.id for r in restored.results] == ids
    for task_id in ids:
        app.backend.store_result(task_id, task_id[:4], states.SUCCESS)
    assert restored.get(timeout=5) == [i[:4] for i in ids]
