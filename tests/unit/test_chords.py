"""The chord count in S3 (results/chords.py), with the in-memory store: who fires, and once.

The body's sending is replaced by a recorder; the integration tests
(tests/integration/test_canvas.py) run whole chords through real workers.
"""

from __future__ import annotations

import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

from celery import states
from celery.exceptions import ChordError, TaskRevokedError

from cloudworker.application import CloudworkerCelery
from cloudworker.keys import chord_prefix
from cloudworker.objectstore import Listed, MemoryObjectStore
from cloudworker.results.backend import CloudworkerBackend
from cloudworker.results.chords import BUCKETS_OPTION, FANOUT, ChordJoin, _body
from cloudworker.results.mailbox import notice_state


class Recording(ChordJoin):
    """A ChordJoin that records each firing instead of sending the body."""

    def __init__(self, backend: CloudworkerBackend) -> None:
        super().__init__(backend)
        self.fired: list[str] = []

    def _fire(self, group_id: str, request: Any) -> None:
        self.fired.append(request.id)

    def _fail(self, group_id: str, request: Any, reason: str, cause: BaseException) -> None:
        self.fired.append(f"{request.id}: {reason}")


def part(group_id: str, task_id: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        id=task_id or str(uuid.uuid4()), group=group_id, chord={"task": "body"}, reply_to=None
    )


def test_only_the_last_part_fires_and_a_repeated_part_counts_once(
    memory_app: CloudworkerCelery, memory_store: MemoryObjectStore
) -> None:
    backend = memory_app.backend
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
    assert not any("done-" in key for key in memory_store.objects)
    join.part_returned(third)
    assert join.fired == [third.id]


def test_a_failed_part_fails_the_body_at_once_and_the_last_part_cleans_up(
    memory_app: CloudworkerCelery, memory_store: MemoryObjectStore
) -> None:
    backend = memory_app.backend
    assert isinstance(backend, CloudworkerBackend)
    join = Recording(backend)
    group_id = str(uuid.uuid4())
    join.set_size(group_id, 3)
    first, second, third = part(group_id), part(group_id), part(group_id)
    join.part_returned(first)
    join.part_returned(second, ValueError("boom"))
    assert join.fired == [f"{second.id}: Dependency {second.id} raised ValueError('boom')"]
    join.part_returned(second, ValueError("boom"))  # redelivered: its claim, fired again
    join.part_returned(third)  # completes the count: the chord has fired, nothing sent
    assert len(join.fired) == 2 and third.id not in join.fired
    assert not any("done-" in key for key in memory_store.objects)


def test_a_part_whose_size_is_not_written_yet_does_not_fire(memory_app: CloudworkerCelery) -> None:
    backend = memory_app.backend
    assert isinstance(backend, CloudworkerBackend)
    join = Recording(backend)
    group_id = str(uuid.uuid4())
    join.part_returned(part(group_id))  # Celery writes the size before sending the last part
    assert join.fired == []


def test_add_to_chord_waits_for_one_more_part(memory_app: CloudworkerCelery) -> None:
    backend = memory_app.backend
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
    memory_app: CloudworkerCelery, memory_store: MemoryObjectStore
) -> None:
    backend = memory_app.backend
    assert isinstance(backend, CloudworkerBackend)
    join = ChordJoin(backend)
    prefix = chord_prefix(str(uuid.uuid4()))
    assert join._claim(prefix, "part-a") is True
    assert join._claim(prefix, "part-b") is False  # a concurrent last part
    assert join._claim(prefix, "part-a") is True  # part-a redelivered before it sent the body


def test_a_saved_group_is_restored_in_order(memory_app: CloudworkerCelery) -> None:
    ids = [str(uuid.uuid4()) for _ in range(5)]
    group_id = str(uuid.uuid4())
    saved = memory_app.GroupResult(group_id, [memory_app.AsyncResult(i) for i in ids])
    saved.save()
    restored = memory_app.GroupResult.restore(group_id)
    assert [r.id for r in restored.results] == ids
    for task_id in ids:
        memory_app.backend.store_result(task_id, task_id[:4], states.SUCCESS)
    assert restored.get(timeout=5) == [i[:4] for i in ids]


def test_a_chord_applied_by_a_client_has_its_body_answer_the_client(
    memory_app: CloudworkerCelery,
) -> None:
    """So the body's result is pushed to the caller's queue, not read by polling S3."""
    signature = memory_app.signature("tests.total")
    body = signature.freeze()
    header = memory_app.GroupResult(str(uuid.uuid4()), [memory_app.AsyncResult("h1")])
    memory_app.backend.apply_chord((header.id, header.results), signature)
    assert signature.options["reply_to"] == memory_app.backend.reply_address()
    assert memory_app.services.mailbox.sent(body.id)
    assert memory_app.GroupResult.restore(header.id).results[0].id == "h1"


# -- a large chord counts in buckets (no listing grows with the chord) ---------------------


def bucketed(
    app: CloudworkerCelery, join: ChordJoin, size: int
) -> tuple[str, list[SimpleNamespace], Any]:
    """A chord of ``size`` plain tasks, applied: its group id, its parts, its body."""
    group_id = str(uuid.uuid4())
    header = app.GroupResult(group_id, [app.AsyncResult(str(uuid.uuid4())) for _ in range(size)])
    body = app.signature("tests.total")
    join.apply(header, body)
    join.set_size(group_id, size)
    chord = {"task": "tests.total", "options": dict(body.options)}
    parts = [
        SimpleNamespace(id=r.id, group=group_id, chord=chord, reply_to=None) for r in header.results
    ]
    return group_id, parts, body


def test_a_large_flat_header_is_counted_in_buckets_of_about_fanout_parts(
    memory_app: CloudworkerCelery,
) -> None:
    backend = memory_app.backend
    assert isinstance(backend, CloudworkerBackend)
    _, _, body = bucketed(memory_app, Recording(backend), 1000)
    counts = body.options[BUCKETS_OPTION]
    assert len(counts) == 1000 // FANOUT + 1 and sum(counts) == 1000
    assert max(counts) < 2 * FANOUT  # a hash spreads them (32 on average)


def test_a_small_or_nested_header_is_counted_as_one(memory_app: CloudworkerCelery) -> None:
    backend = memory_app.backend
    assert isinstance(backend, CloudworkerBackend)
    join = Recording(backend)
    _, _, small = bucketed(memory_app, join, FANOUT)
    assert BUCKETS_OPTION not in small.options
    chained = memory_app.AsyncResult("last", parent=memory_app.AsyncResult("first"))
    leaves = [memory_app.AsyncResult(str(i)) for i in range(2 * FANOUT)]
    header = memory_app.GroupResult("g", [chained, *leaves])
    body = memory_app.signature("tests.total")
    join.apply(header, body)
    assert BUCKETS_OPTION not in body.options


def test_a_bucketed_chord_fires_once_when_its_last_part_reports_and_lists_little(
    memory_app: CloudworkerCelery, memory_store: MemoryObjectStore
) -> None:
    backend = memory_app.backend
    assert isinstance(backend, CloudworkerBackend)
    join = Recording(backend)
    group_id, parts, _ = bucketed(memory_app, join, 500)
    listed: list[int] = []
    original = memory_store.list

    def counting(prefix: str) -> list[Listed]:
        found = original(prefix)
        listed.append(len(found))
        return found

    memory_store.list = counting  # type: ignore[method-assign]
    random.Random(7).shuffle(parts)
    for number, request in enumerate(parts):
        join.part_returned(request)
        if number % 50 == 0:
            join.part_returned(request)  # redelivered: counted once
        assert join.fired == ([] if number < len(parts) - 1 else [request.id])
    buckets = 500 // FANOUT + 1
    # Each part lists its bucket, and each bucket's last part the buckets: never all 500.
    assert max(listed[:-1]) < 2 * FANOUT
    # One LIST per report (a redelivered part reports twice), two more per report of
    # a bucket's last part (its redelivery, if it had one, lists again): the buckets,
    # and the tasks added to the chord (reports of tasks outside the header are left out).
    redelivered = len(parts) // 50 + 1
    assert len(listed) <= len(parts) + redelivered + 2 * (buckets + redelivered) + 1
    assert [k for k in memory_store.objects if k.startswith(chord_prefix(group_id))] == [
        f"{chord_prefix(group_id)}fired"
    ]


def test_a_bucketed_chord_fires_once_when_parts_report_at_the_same_time(
    memory_app: CloudworkerCelery,
) -> None:
    backend = memory_app.backend
    assert isinstance(backend, CloudworkerBackend)
    for attempt in range(5):
        join = Recording(backend)
        _, parts, _ = bucketed(memory_app, join, 300)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(join.part_returned, parts))
        assert len(join.fired) == 1, attempt


def test_a_task_added_to_a_bucketed_chord_is_waited_for_even_in_a_finished_bucket(
    memory_app: CloudworkerCelery,
) -> None:
    backend = memory_app.backend
    assert isinstance(backend, CloudworkerBackend)
    join = Recording(backend)
    group_id, parts, _ = bucketed(memory_app, join, 100)
    caller, others = parts[0], parts[1:]
    for request in others:  # every bucket but the caller's completes
        join.part_returned(request)
    extra = SimpleNamespace(id=str(uuid.uuid4()), group=group_id, chord=caller.chord, reply_to=None)
    join.add(group_id, extra.id, caller)  # the caller adds a task, then ends
    join.part_returned(caller)
    assert join.fired == []
    join.part_returned(extra)
    assert join.fired == [extra.id]


def test_a_failed_part_of_a_bucketed_chord_fails_the_body_at_once(
    memory_app: CloudworkerCelery, memory_store: MemoryObjectStore
) -> None:
    backend = memory_app.backend
    assert isinstance(backend, CloudworkerBackend)
    join = Recording(backend)
    group_id, parts, _ = bucketed(memory_app, join, 100)
    join.part_returned(parts[3], ValueError("boom"))
    assert join.fired == [f"{parts[3].id}: Dependency {parts[3].id} raised ValueError('boom')"]
    for request in parts[:3] + parts[4:]:
        join.part_returned(request)
    assert len(join.fired) == 1
    assert [k for k in memory_store.objects if k.startswith(chord_prefix(group_id))] == [
        f"{chord_prefix(group_id)}fired"
    ]


def test_the_body_is_sent_without_the_bucket_counts(memory_app: CloudworkerCelery) -> None:
    request = SimpleNamespace(
        chord={"task": "tests.total", "options": {BUCKETS_OPTION: [3, 4], "queue": "q"}}
    )
    assert _body(request, memory_app).options == {"queue": "q"}


def test_a_part_revoked_on_receipt_fails_the_body_outside_any_exception_handler(
    memory_app: CloudworkerCelery,
) -> None:
    """No exception is being handled when a worker refuses a revoked part: Celery's
    chord_error_from_stack read a traceback of None and raised AttributeError out of
    the worker's revocation, leaking its pool slot (the worker then held every task)."""
    backend = memory_app.backend
    assert isinstance(backend, CloudworkerBackend)
    body = memory_app.signature("tests.total")
    body_id = body.freeze().id
    group_id = str(uuid.uuid4())
    join = ChordJoin(backend)
    join.set_size(group_id, 2)
    revoked = SimpleNamespace(id=str(uuid.uuid4()), group=group_id, chord=dict(body))
    join.part_returned(revoked, TaskRevokedError("revoked"))
    meta = backend.get_task_meta(body_id)
    assert meta["status"] == states.FAILURE
    assert isinstance(meta["result"], ChordError)
    assert f"Dependency {revoked.id} raised TaskRevokedError('revoked')" in str(meta["result"])


def test_a_body_failed_unrun_is_pushed_to_its_caller(memory_app: CloudworkerCelery) -> None:
    """Celery stores the failure of a body that never ran with no request, so with no
    reply_to: its caller heard of it only from S3, after a whole long poll."""
    backend = memory_app.backend
    assert isinstance(backend, CloudworkerBackend)
    mailbox = memory_app.services.mailbox
    body = memory_app.signature("tests.total")
    body.options["reply_to"] = backend.reply_address()
    body_id = body.freeze().id
    mailbox.open()  # the queue a waiting client has
    mailbox.expect(body_id)
    group_id = str(uuid.uuid4())
    join = ChordJoin(backend)
    join.set_size(group_id, 2)
    failed = SimpleNamespace(id=str(uuid.uuid4()), group=group_id, chord=dict(body), reply_to=None)
    join.part_returned(failed, ValueError("boom"))
    notice = mailbox.wait(body_id, timeout=1)
    assert notice is not None
    assert notice_state(notice) == states.FAILURE
    assert backend._callers == {}  # only while Celery stores the failure


def test_a_report_of_a_task_outside_the_header_neither_fires_nor_fails_the_chord(
    memory_app: CloudworkerCelery,
) -> None:
    """Any message may carry a chord's group id: its report fired the body before a real
    part had ended (the join timed out, ChordError), and its failure claimed the chord."""
    backend = memory_app.backend
    assert isinstance(backend, CloudworkerBackend)
    join = Recording(backend)
    group_id = str(uuid.uuid4())
    header = memory_app.GroupResult(group_id, [memory_app.AsyncResult(f"p{n}") for n in range(3)])
    join.apply(header, memory_app.signature("tests.total"))
    join.set_size(group_id, 3)
    parts = [part(group_id, f"p{n}") for n in range(3)]
    join.part_returned(parts[0])
    join.part_returned(part(group_id, "intruder"))  # an extra message with the group id
    join.part_returned(parts[1])
    assert join.fired == []  # three reports, but p2 has not ended
    join.part_returned(part(group_id, "refused"), ValueError("refused message"))
    assert join.fired == []  # a failure of a task outside the header claims nothing
    join.part_returned(parts[2])
    assert join.fired == ["p2"]


def test_a_task_added_to_the_chord_is_one_of_its_parts(memory_app: CloudworkerCelery) -> None:
    backend = memory_app.backend
    assert isinstance(backend, CloudworkerBackend)
    join = Recording(backend)
    group_id = str(uuid.uuid4())
    header = memory_app.GroupResult(group_id, [memory_app.AsyncResult("p0")])
    join.apply(header, memory_app.signature("tests.total"))
    join.set_size(group_id, 1)
    join.add(group_id, "added")
    join.part_returned(part(group_id, "p0"))
    assert join.fired == []
    join.part_returned(part(group_id, "added"), ValueError("boom"))
    assert join.fired == ["added: Dependency added raised ValueError('boom')"]
