"""Canvas a worker applies itself: the next steps reply to the caller, not to the worker.

Celery gives every step of a canvas the caller's ``reply_to``. When a worker sends
the rest of a chain, a group inside it becomes a chord that the worker applies, and
Celery's ``chord_unlock`` (run by a worker) reads the header tasks' states: those
come from S3, since their notices go to the caller's queue (issue #15: this chord
never completed).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery import chain, chord, group

from tests.integration.conftest import LocalStack
from tests.support.workers import Workers

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet(local_stack: LocalStack) -> Iterator[Workers]:
    workers = Workers.on_queue(local_stack, "canvas", visibility=60, wait_seconds=1)
    workers.start("canvas1", wait_ready=True)
    try:
        yield workers
    finally:
        workers.close("canvas1")


def test_a_group_in_the_middle_of_a_chain_completes(fleet: Workers) -> None:
    app = fleet.app
    add, total = app.signature("tests.add"), app.signature("tests.total")
    workflow = chain(
        add.clone(args=(1, 2)),
        group(add.clone(args=(10,)), add.clone(args=(20,))),
        total.clone(),
    )
    assert workflow.apply_async().get(timeout=90) == (3 + 10) + (3 + 20)


def test_a_chord_after_a_task_applied_by_the_worker_completes(fleet: Workers) -> None:
    app = fleet.app
    add, total = app.signature("tests.add"), app.signature("tests.total")
    header = [add.clone(args=(n,)) for n in range(5)]
    workflow = chain(add.clone(args=(1, 1)), chord(header, total.clone()))
    # Each header task adds 2 (the first step's result) to its n.
    assert workflow.apply_async().get(timeout=90) == sum(n + 2 for n in range(5))
