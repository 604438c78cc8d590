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
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from celery import states
from celery.backends.base import _create_chord_error_with_cause
from celery.canvas import maybe_signature
from celery.exceptions import ChordError
from celery.result import AsyncResult, GroupResult, ResultSet, allow_join_result

from tasks.keys import chord_prefix, result_key

if TYPE_CHECKING:
    from tasks.backend import CloudworkerBackend

__all__ = ["ChordJoin"]

log = logging.getLogger(__name__)

_SIZE = "size-"
_EXTRA = "extra-"
_DONE = "done-"
_FIRED = "fired"
#: Header results read at once by the part that fires the body.
_READERS = 16


class ChordJoin:
    """The chord bookkeeping of one result backend (Celery's ``on_chord_part_return``)."""

    def __init__(self, backend: CloudworkerBackend) -> None:
        self.backend = backend

    def apply(self, header_result: GroupResult) -> None:
        """Before the header is sent: keep its results' order for the part that fires."""
        self.backend.save_group(header_result.id, header_result)

    def set_size(self, group_id: str, size: int) -> None:
        """How many header tasks will report (Celery counts nested groups' tasks)."""
        self._store().put(f"{chord_prefix(group_id)}{_SIZE}{int(size)}", b"")

    def add(self, group_id: str, task_id: str) -> None:
        """``task.add_to_chord``: one more header task to wait for."""
        self._store().put(f"{chord_prefix(group_id)}{_EXTRA}{task_id}", b"")

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
        store.put(f"{prefix}{_DONE}{task_id}", b"")
        if failure is not None and self._claim(prefix, task_id):
            self._fail(group_id, request, f"Dependency {task_id} raised {failure!r}", failure)
        names = [listed.key[len(prefix) :] for listed in store.list(prefix)]
        expected = _expected(names, request)
        done = sum(name.startswith(_DONE) for name in names)
        if expected is None or done < expected:
            return
        if done > expected:
            log.warning("chord %s: %d parts reported, %d expected", group_id, done, expected)
        if failure is None and self._claim(prefix, task_id):
            self._fire(group_id, request)
        # Every part has reported and the body was sent or failed (by this part, or
        # by one that failed earlier): the markers have served.
        store.delete_many(prefix + name for name in names if name.startswith(_DONE))

    def _claim(self, prefix: str, task_id: str) -> bool:
        """Whether this part fires the body: the first claim wins, and its own rerun."""
        store = self._store()
        claim = json.dumps({"task_id": task_id}).encode()
        if store.put(f"{prefix}{_FIRED}", claim, only_if_absent=True):
            return True
        return bool(store.get(f"{prefix}{_FIRED}") == claim)

    def _fire(self, group_id: str, request: Any) -> None:
        backend, app = self.backend, self.backend.app
        callback = maybe_signature(request.chord, app=app)
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
            backend.chord_error_from_stack(
                callback,
                _create_chord_error_with_cause(
                    message=f"Callback error: {exc!r}", original_exc=exc
                ),
            )

    def _fail(self, group_id: str, request: Any, reason: str, cause: BaseException) -> None:
        """The body fails with Celery's ``ChordError`` (its errbacks run, its chain fails)."""
        log.error("chord %s: %s", group_id, reason)
        callback = maybe_signature(request.chord, app=self.backend.app)
        self.backend.chord_error_from_stack(
            callback, _create_chord_error_with_cause(message=reason, original_exc=cause)
        )

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
