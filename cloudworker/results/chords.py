"""Chords joined by the result backend itself: an S3 count that fires the body once.

Celery's fallback for a backend without a join is ``celery.chord_unlock``, a
task that polls every header result once a second until all are ready: on SQS
and S3 that is a request per part per second, forever on a stuck chord. Here
each header task reports its own end, as Redis's backend does, using only S3
conditional writes and S3's strongly consistent listings:

* when the chord is applied, its header's ``GroupResult`` is saved
  (``groups/<group id>.json``, the order of the results) and the number of
  header completions to expect is written as the name of an empty object,
  ``chords/<group id>/size-<n>`` (``task.add_to_chord`` adds ``extra-<task id>``);
* each header task, once its result is stored, writes ``done-<task id>`` under
  the same prefix and lists it: one PUT and one LIST a part;
* the part whose listing shows every expected completion claims the chord with
  a conditional write of ``fired``, which only one writer can win, reads the
  header results (in parallel), and sends the body with them, in order; if one
  failed, the body fails with Celery's ``ChordError`` and its errbacks run;
  then it deletes the ``done-`` objects;
* a part that fails does not wait for the others: it claims the chord at once
  and fails the body with ``ChordError("Dependency <its id> raised ...")``, so
  the caller, and the steps chained after the chord, learn of the failure when
  it happens, not when the slowest part ends (Celery's ``chord_unlock`` and
  Redis's join wait for every part, then name the first failed part in header
  order). The parts still running are counted as before; the one that completes
  the count finds the chord fired and deletes the markers.

A large chord's parts count in buckets, so no listing grows with the chord.
With every part's marker under one prefix, each part's LIST returns every
marker written so far: O(n) work a part and O(n^2) a chord (on ministack a
1,000-part chord's parts slowed from 0.03 s to 0.2 s). When the header is a
flat list of more than ``FANOUT`` plain tasks (the shape of a large header;
anything else is counted as above), :meth:`ChordJoin.apply` spreads its task
ids over ``ceil(n / FANOUT)`` buckets by a hash of the id and writes how many
land in each into the body's options (``cloudworker_chord_buckets``), which
every header message carries in ``request.chord``. A part then:

* writes ``b<bucket>/done-<task id>`` and lists ``b<bucket>/`` (about
  ``FANOUT`` markers): one PUT and one LIST, as before;
* the part whose listing completes its bucket writes ``t/<bucket>`` and lists
  ``t/`` (one marker a bucket); the part whose listing completes that claims
  and fires as above.

Two parts that finish together both list after writing, so at least one sees
the other's marker (S3's listings are strongly consistent), at each level.
``task.add_to_chord`` in a bucketed chord writes ``b<bucket>/extra-<id>`` (so
that bucket waits for it) and ``x/<id>``; the part that would fire first checks
that every ``x/`` task's marker is there, since its bucket may have been
complete, and marked so in ``t/``, before the task was added.

A part that runs twice (a redelivery after a crash) writes the same
``done-<task id>`` again, so it is counted once. A part that crashed after
claiming and before sending is redelivered and, finding its own claim, sends.
The one window left is a crash between sending the body and deleting the
markers: the redelivered part sends the body a second time (same task id, so
one result is kept, but its code runs twice).
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from celery import states
from celery.backends.base import _create_chord_error_with_cause
from celery.canvas import maybe_signature
from celery.exceptions import ChordError
from celery.result import AsyncResult, GroupResult, ResultSet, allow_join_result

from cloudworker.keys import chord_prefix, result_key

if TYPE_CHECKING:
    from cloudworker.results.backend import CloudworkerBackend

__all__ = ["ChordJoin"]

log = logging.getLogger(__name__)

_SIZE = "size-"
_EXTRA = "extra-"
_DONE = "done-"
_FIRED = "fired"
_BUCKET = "b"
_TOP = "t/"
_ADDED = "x/"
#: Parts a bucket of a large chord counts (see the module's docstring).
FANOUT = 32
#: The body option that carries a bucketed chord's expected count per bucket.
BUCKETS_OPTION = "cloudworker_chord_buckets"
#: Header results read at once by the part that fires the body.
_READERS = 16


class ChordJoin:
    """The chord bookkeeping of one result backend (Celery's ``on_chord_part_return``)."""

    def __init__(self, backend: CloudworkerBackend) -> None:
        self.backend = backend

    def apply(self, header_result: GroupResult, body: Any) -> None:
        """Before the header is sent: keep its results' order for the part that fires.

        A large flat header is counted in buckets: how many of its tasks land in
        each goes into the body's options, which the header messages carry.
        """
        self.backend.save_group(header_result.id, header_result)
        results = header_result.results
        flat = all(isinstance(r, AsyncResult) and r.parent is None for r in results)
        if flat and len(results) > FANOUT:
            counts = [0] * math.ceil(len(results) / FANOUT)
            for result in results:
                counts[_bucket_of(result.id, len(counts))] += 1
            body.options[BUCKETS_OPTION] = counts

    def set_size(self, group_id: str, size: int) -> None:
        """How many header tasks will report (Celery counts nested groups' tasks)."""
        self._store().put(f"{chord_prefix(group_id)}{_SIZE}{int(size)}", b"")

    def add(self, group_id: str, task_id: str, request: Any = None) -> None:
        """``task.add_to_chord`` by the part ``request``: one more header task to wait for."""
        store, prefix = self._store(), chord_prefix(group_id)
        buckets = _buckets(request)
        if buckets is None:
            store.put(f"{prefix}{_EXTRA}{task_id}", b"")
            return
        bucket = _bucket_of(task_id, len(buckets))
        store.put(f"{prefix}{_BUCKET}{bucket}/{_EXTRA}{task_id}", b"")
        store.put(f"{prefix}{_ADDED}{task_id}", b"")

    def part_returned(self, request: Any, failure: BaseException | None = None) -> None:
        """A header task ended (its result is stored): count it; the last one fires.

        ``failure``: the part failed (or was revoked) with it, so it fires the
        body's failure now. Every step can be repeated (a PUT of the same marker,
        a listing, the claim that recognises its own), so endpoint faults are
        retried as a whole.
        """
        group_id, task_id = getattr(request, "group", None), getattr(request, "id", None)
        if not group_id or not task_id:
            return
        self.backend._ensure_retryable(self._count, request, group_id, task_id, failure)

    def _count(
        self, request: Any, group_id: str, task_id: str, failure: BaseException | None
    ) -> None:
        store, prefix = self._store(), chord_prefix(group_id)
        expected_by = _buckets(request) or []
        bucket = _bucket_of(task_id, len(expected_by)) if expected_by else None
        here = prefix if bucket is None else f"{prefix}{_BUCKET}{bucket}/"
        if failure is not None:
            # Any message may carry the group id: only a part of the header fails it.
            if not self._is_member(group_id, prefix, task_id):
                log.warning("chord %s: task %s is not one of its parts", group_id, task_id)
                return
            store.put(f"{here}{_DONE}{task_id}", b"")
            if self._claim(prefix, task_id):
                self._fail(group_id, request, f"Dependency {task_id} raised {failure!r}", failure)
        else:
            store.put(f"{here}{_DONE}{task_id}", b"")
        names = [listed.key[len(here) :] for listed in store.list(here)]
        done = sum(name.startswith(_DONE) for name in names)
        if bucket is None:
            expected = _expected(names, request)
        else:
            expected = expected_by[bucket] + sum(name.startswith(_EXTRA) for name in names)
        if expected is None or done < expected:
            return
        done_here = self._parts_done(
            group_id=group_id,
            prefix=prefix,
            names=names,
            expected=expected,
            expected_by=expected_by,
            bucket=bucket,
        )
        if not done_here:
            return  # the count was reached with reports of tasks outside the header
        if bucket is not None and not self._all_buckets_done(prefix, bucket, len(expected_by)):
            return
        if failure is None and self._claim(prefix, task_id):
            self._fire(group_id, request)
        # Every part has reported and the body was sent or failed (by this part, or
        # by one that failed earlier): the markers have served.
        if bucket is None:
            store.delete_many(prefix + name for name in names if name.startswith(_DONE))
        else:
            fired = f"{prefix}{_FIRED}"
            store.delete_many(k.key for k in store.list(prefix) if k.key != fired)

    def _members(self, group_id: str, added: set[str]) -> set[str] | None:
        """The ids that report as parts: the saved header's tasks, and ``added`` to it.

        None when the header was not saved (or has expired): then every report counts.
        """
        header = GroupResult.restore(group_id, backend=self.backend)
        if header is None:
            return None
        return {str(leaf.id) for leaf in _leaves(header)} | added

    def _added(self, prefix: str) -> set[str]:
        """The tasks added to the chord (``add_to_chord``): two small listings."""
        store = self._store()
        return {
            listed.key[len(start) :]
            for start in (f"{prefix}{_EXTRA}", f"{prefix}{_ADDED}")
            for listed in store.list(start)
        }

    def _is_member(self, group_id: str, prefix: str, task_id: str) -> bool:
        members = self._members(group_id, self._added(prefix))
        return members is None or task_id in members

    def _parts_done(
        self,
        *,
        group_id: str,
        prefix: str,
        names: list[str],
        expected: int,
        expected_by: list[int],
        bucket: int | None,
    ) -> bool:
        """Whether the parts that reported here are enough once reports of tasks outside
        the header are left out: any message may carry the group id, and its report
        would otherwise fire the body before a real part has ended (the join then
        timed out). Read only when the count is reached: one GET of the header."""
        if bucket is None:  # the listing in hand has the tasks added
            added = {n[len(_EXTRA) :] for n in names if n.startswith(_EXTRA)}
        else:
            added = {
                k.key[len(prefix) + len(_ADDED) :] for k in self._store().list(prefix + _ADDED)
            }
        members = self._members(group_id, added)
        if members is None:
            return True
        if bucket is not None:
            members = {m for m in members if _bucket_of(m, len(expected_by)) == bucket}
        reported = {name[len(_DONE) :] for name in names if name.startswith(_DONE)}
        outsiders = reported - members
        if outsiders:
            log.warning(
                "chord %s: %d report(s) of tasks not in its header left out",
                group_id,
                len(outsiders),
            )
        return len(reported & members) >= expected

    def _all_buckets_done(self, prefix: str, bucket: int, buckets: int) -> bool:
        """This part completed its bucket: whether every bucket, and every added task, is done."""
        store = self._store()
        store.put(f"{prefix}{_TOP}{bucket}", b"")
        if len(store.list(f"{prefix}{_TOP}")) < buckets:
            return False
        for added in store.list(f"{prefix}{_ADDED}"):
            task_id = added.key[len(prefix) + len(_ADDED) :]
            marker = f"{prefix}{_BUCKET}{_bucket_of(task_id, buckets)}/{_DONE}{task_id}"
            if store.get(marker) is None:
                return False  # that task completes its bucket again, and checks again
        return True

    def _claim(self, prefix: str, task_id: str) -> bool:
        """Whether this part fires the body: the first claim wins, and its own rerun."""
        store = self._store()
        claim = json.dumps({"task_id": task_id}).encode()
        if store.put(f"{prefix}{_FIRED}", claim, only_if_absent=True):
            return True
        return bool(store.get(f"{prefix}{_FIRED}") == claim)

    def _fire(self, group_id: str, request: Any) -> None:
        backend, app = self.backend, self.backend.app
        callback = _body(request, app)
        header: GroupResult | None = None
        try:
            header = GroupResult.restore(group_id, backend=backend)
            if header is None:
                raise ChordError(f"GroupResult {group_id} no longer exists")
            self._prefetch(header)
            with allow_join_result():
                values = header.join(timeout=app.conf.result_chord_join_timeout, propagate=True)
        except Exception as exc:  # noqa: BLE001 - any failure fails the body, as Celery's do
            reason = repr(exc)
            culprit = _first_failed(header) if header is not None else None
            if culprit is not None:
                reason = f"Dependency {culprit} raised {exc!r}"
            self._fail(group_id, request, reason, exc)
            return
        try:
            app.amqp._retry_publish(callback.delay, values)
        except Exception as exc:
            log.exception("chord %s: could not send the body", group_id)
            with backend.answering(_callers(callback)):
                backend.chord_error_from_stack(
                    callback,
                    _create_chord_error_with_cause(
                        message=f"Callback error: {exc!r}", original_exc=exc
                    ),
                )

    def _fail(self, group_id: str, request: Any, reason: str, cause: BaseException) -> None:
        """The body fails with Celery's ``ChordError`` (its errbacks run, its chain fails).

        Celery's ``chord_error_from_stack`` reads the traceback of the exception
        being handled. A part revoked when it is received fails without one (the
        worker has raised nothing yet), and with no traceback Celery raised
        ``AttributeError`` out of the worker's revocation, which never released
        its pool slot: the worker then held every later task. So the error is
        raised here, and handled.
        """
        log.error("chord %s: %s", group_id, reason)
        callback = _body(request, self.backend.app)
        error = _create_chord_error_with_cause(message=reason, original_exc=cause)
        try:
            raise error
        except ChordError:
            with self.backend.answering(_callers(callback)):
                self.backend.chord_error_from_stack(callback, error)

    def _prefetch(self, header: ResultSet) -> None:
        """Read every header result at once, so the join that follows reads none."""
        leaves = list(_leaves(header))
        with ThreadPoolExecutor(max_workers=min(_READERS, max(1, len(leaves)))) as pool:
            metas = list(pool.map(self._read, (leaf.id for leaf in leaves)))
        for leaf, meta in zip(leaves, metas, strict=True):
            if meta is not None and meta.get("status") in states.READY_STATES:
                leaf._maybe_set_cache(meta)

    def _read(self, task_id: str) -> dict[str, Any] | None:
        record = self._store().get(result_key(task_id))
        if record is None:
            return None
        meta: dict[str, Any] = self.backend.decode_result(record)
        return meta

    def _store(self) -> Any:
        return self.backend.services.store()


def _body(request: Any, app: Any) -> Any:
    """The chord's body, as it is sent: without the bucket counts the header carried."""
    callback = maybe_signature(request.chord, app=app)
    callback.options.pop(BUCKETS_OPTION, None)
    return callback


def _callers(body: Any) -> dict[str, str]:
    """Task id -> ``reply_to`` of the body and the tasks in it (a group body's members).

    Whose callers wait for the results Celery stores when the body fails unrun.
    """
    found: dict[str, str] = {}
    pending = [body]
    while pending:
        sig = pending.pop()
        options = getattr(sig, "options", None) or {}
        task_id, reply_to = options.get("task_id"), options.get("reply_to")
        if isinstance(task_id, str) and isinstance(reply_to, str) and reply_to:
            found[task_id] = reply_to
        tasks = getattr(sig, "tasks", None)
        if isinstance(tasks, (list, tuple)):
            pending.extend(maybe_signature(t, app=getattr(sig, "app", None)) for t in tasks)
    return found


def _buckets(request: Any) -> list[int] | None:
    """A bucketed chord's expected count per bucket, from the body the part carries."""
    chord = getattr(request, "chord", None)
    options = chord.get("options") if isinstance(chord, dict) else None
    counts = options.get(BUCKETS_OPTION) if isinstance(options, dict) else None
    if isinstance(counts, list) and counts and all(isinstance(c, int) for c in counts):
        return counts
    return None


def _bucket_of(task_id: str, buckets: int) -> int:
    """The bucket a task id counts in: a hash every process computes alike."""
    return zlib.crc32(task_id.encode()) % buckets


def _expected(names: list[str], request: Any) -> int | None:
    """How many parts the chord waits for (None: not known yet, so not the last)."""
    size: int | None = None
    for name in names:
        if name.startswith(_SIZE) and name[len(_SIZE) :].isdigit():
            size = int(name[len(_SIZE) :])
    if size is None:
        chord = getattr(request, "chord", None) or {}
        given = chord.get("chord_size") if isinstance(chord, dict) else None
        size = int(given) if isinstance(given, int) else None
    if size is None:
        return None
    return size + sum(name.startswith(_EXTRA) for name in names)


def _first_failed(header: ResultSet) -> str | None:
    """The id of the first header task (in order) that failed or was revoked."""
    for leaf in _leaves(header):
        if leaf._cache and leaf._cache.get("status") in states.PROPAGATE_STATES:
            return str(leaf.id)
    return None


def _leaves(results: ResultSet) -> Any:
    for result in results.results:
        if isinstance(result, ResultSet):
            yield from _leaves(result)
        elif isinstance(result, AsyncResult):
            yield result
