"""Canvas a worker applies itself: the next steps reply to the caller, not to the worker.

Celery gives every step of a canvas the caller's ``reply_to``. When a worker sends
the rest of a chain, a group inside it becomes a chord that the worker applies, and
Celery's ``chord_unlock`` (run by a worker) reads the header tasks' states: those
come from S3, since their notices go to the caller's queue (issue #15: this chord
never completed).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import chain, chord, group, states
from celery.exceptions import ChordError
from celery.result import GroupResult

from cloudworker.application import create_app
from cloudworker.results.chords import FANOUT
from tests.integration.conftest import LocalStack
from tests.support.waiting import eventually
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


# -- chords joined by the backend (results/chords.py) ------------------------------------------


def executions(marker: Path) -> list[str]:
    return marker.read_text().split() if marker.exists() else []


@pytest.mark.parametrize("size", [30, 3 * FANOUT], ids=["counted-as-one", "in-buckets"])
def test_a_chord_body_gets_the_header_results_in_order_without_chord_unlock(
    fleet: Workers, tmp_path: Path, size: int
) -> None:
    app = fleet.app
    add = app.signature("tests.add")
    body = app.signature("tests.record", args=(str(tmp_path / "body"),))
    header = [add.clone(args=(n, 100)) for n in range(size)]
    assert chord(header, body).apply_async().get(timeout=90) == [n + 100 for n in range(size)]
    assert len(executions(tmp_path / "body")) == 1
    log = fleet.stack.log_file("canvas1").read_text()
    assert "chord_unlock" not in log


def test_a_failed_header_task_fails_the_body_with_a_chord_error(fleet: Workers) -> None:
    app = fleet.app
    add, fail = app.signature("tests.add"), app.signature("tests.fail")
    header = [add.clone(args=(1, 1)), fail.clone(args=("part two broke",)), add.clone(args=(2, 2))]
    result = chord(header, app.signature("tests.total")).apply_async()
    with pytest.raises(Exception, match="part two broke"):
        result.get(timeout=90)  # Celery raises the header's error first (its parent)
    body = create_app(app.services.settings).AsyncResult(result.id)
    with pytest.raises(ChordError) as raised:
        body.get(timeout=90)
    assert "Dependency" in str(raised.value)
    assert "part two broke" in str(raised.value)
    assert body.state == states.FAILURE


def test_a_chord_whose_header_task_is_killed_fires_its_body_once(
    fleet: Workers, local_stack: LocalStack, tmp_path: Path
) -> None:
    app = fleet.app
    queue = app.services.settings.task_queue_name
    # Nothing of the tests before still in flight: a pool process killed while its
    # background deletions wait (cloudworker/results/finishing.py) leaves those messages to come
    # back after the visibility timeout, which this test would then wait for.
    assert local_stack.wait_for_depth(queue, 0)
    markers = [tmp_path / f"part{n}" for n in range(4)]
    header = [
        app.signature("tests.slow", args=(2, str(marker)), kwargs={"again": 0.5})
        for marker in markers
    ]
    body = app.signature("tests.record", args=(str(tmp_path / "body"),))
    result = chord(header, body).apply_async()
    eventually(lambda: executions(markers[0]), interval=0.05, what="part 0 started")
    os.kill(int(executions(markers[0])[0]), signal.SIGKILL)  # the pool process running part 0
    assert result.get(timeout=120) == [2, 2, 2, 2]
    assert len(executions(markers[0])) == 2  # killed, then run again
    # Every message of the chord deleted: no part is left to fire the body again.
    assert local_stack.wait_for_depth(queue, 0)
    assert len(executions(tmp_path / "body")) == 1


def test_nested_chords_and_a_group_of_groups(fleet: Workers) -> None:
    app = fleet.app
    add, total = app.signature("tests.add"), app.signature("tests.total")
    inner = chord([add.clone(args=(n, n)) for n in range(3)], total.clone())  # 0+2+4 = 6
    outer = chord([inner, add.clone(args=(10, 10))], total.clone())  # 6 + 20
    assert outer.apply_async().get(timeout=90) == 26
    two_groups = chain(
        group(add.clone(args=(1, 1)), add.clone(args=(2, 2))),
        group(total.clone(), total.clone()),
    )
    assert two_groups.apply_async().get(timeout=90) == [6, 6]


def test_a_saved_group_result_is_restored_by_another_process(fleet: Workers) -> None:
    app = fleet.app
    add = app.signature("tests.add")
    saved = group(add.clone(args=(n, 1)) for n in range(5)).apply_async()
    saved.save()
    other = create_app(app.services.settings)
    restored = GroupResult.restore(saved.id, app=other)
    assert restored is not None
    assert [r.id for r in restored.results] == [r.id for r in saved.results]
    assert restored.get(timeout=90) == [1, 2, 3, 4, 5]


def test_messages_carrying_a_chords_group_id_neither_complete_nor_fail_it(
    fleet: Workers, tmp_path: Path
) -> None:
    """Any message may carry a chord's group id (and its body). One that ran counted as a
    part: the body fired before the real parts had ended and failed with
    ChordError(TimeoutError); one refused for its arguments claimed the chord and failed
    its body. Only the tasks of the header count now."""
    app = fleet.app
    markers = [tmp_path / f"part{n}" for n in range(2)]
    header = [app.signature("tests.slow", args=(2, str(marker))) for marker in markers]
    body = app.signature("tests.record", args=(str(tmp_path / "body"),))
    result = chord(header, body).apply_async()
    group_id = result.parent.id
    eventually(lambda: all(m.exists() for m in markers), what="both parts started")
    chord_body = dict(body)
    extra = app.send_task("tests.add", args=(1, 1), group_id=group_id, chord=chord_body)
    refused = app.send_task("tests.add", args=(1,), group_id=group_id, chord=chord_body)
    assert extra.get(timeout=30) == 2
    with pytest.raises(TypeError):  # InvalidArguments: refused for its arguments
        refused.get(timeout=30)
    assert result.get(timeout=90) == [2, 2]  # the header's own results, in order
    assert len(executions(tmp_path / "body")) == 1
    log = fleet.stack.log_file("canvas1").read_text()
    assert "is not one of its parts" in log
