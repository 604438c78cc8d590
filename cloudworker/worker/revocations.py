"""Revocations that stick: kept in S3, loaded by every worker when it starts.

Celery keeps revoked task ids in each worker's memory
(:data:`celery.worker.state.revoked`) and tells the workers by a broadcast. A
worker that was not running then, or has restarted since, never heard of it and
runs the task. Celery's remedies do not fit here: ``--statedb`` is a file per
worker (an instance that is replaced loses it), and mingle, which asks the other
workers at start, does not work on SQS. So:

* the client writes each revocation to S3 first, then broadcasts it as Celery
  does (:class:`Control`, the app's ``control``): ``revoke()``, ``terminate()``,
  ``revoke_by_stamped_headers()``, ``AsyncResult.revoke()``,
  ``GroupResult.revoke()`` and ``celery control revoke`` all go through its
  ``broadcast``. A revocation sent to named workers only (``destination``) is
  theirs alone and is not stored, as in Celery;
* every worker loads the unexpired ones when it starts, before it consumes a task
  (the :class:`StoredRevocations` bootstep). Celery then refuses such a task
  and stores ``REVOKED`` as its result, which any process reads from S3;
* a worker that receives a task carrying stamped headers first merges the
  revocations by stamped headers stored since it last looked (one LIST, and a
  GET for each new one). The broadcast reaches the worker through SNS and its
  control queue, the task through the task queue, and the task often comes
  first: a client that revokes by stamp and then sends a matching task would see
  it run. Only stamped tasks pay this LIST; a revocation of task ids is not
  checked on receipt, since an id is revoked after its task is sent. Each write
  of a stored revocation (its key and ``LastModified``) is merged once, so a
  worker that clears its stamps (as Celery's own tests do) is not given them
  back, while the same headers revoked again later (the same content-named key,
  written anew) are merged again. S3 dates a write to the second: the same
  headers revoked twice within one second are one write here.

The layout (:mod:`cloudworker.keys`): ``revoked/ids/<task id>``, an empty object whose
``LastModified`` in a listing is when it was revoked, so a starting worker makes
only LIST requests (a thousand ids each), no GET per id; and
``revoked/stamped/<sha256>.json``, the headers of a revocation by stamped
headers, which are read. A revocation lasts as long as Celery's:
``REVOKE_EXPIRES`` (10,800 s, ``CELERY_WORKER_REVOKE_EXPIRES``) after it was
made, counted from then, not from the worker's start; the bucket's lifecycle
rule deletes the objects a day later.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from celery import bootsteps, signals
from celery.app import control
from celery.utils.collections import LimitedSet
from celery.worker import control as worker_control
from celery.worker import state as worker_state
from kombu import pidbox

from cloudworker.codec import PayloadRef, check_depth, payload_prefix
from cloudworker.errors import InvalidArguments, LimitExceeded, PayloadError
from cloudworker.keys import (
    REVOKED,
    REVOKED_STAMPED,
    control_payload_dir,
    control_payload_prefix,
    revoked_id_key,
    revoked_stamped_key,
    revoked_task_id,
)
from cloudworker.objectstore import Listed, ObjectStore

__all__ = [
    "Control",
    "Loaded",
    "StoredRevocations",
    "load_into_worker_state",
    "refresh_stamped",
    "remember",
    "remember_stamped",
    "stamped_headers",
    "unexpired",
]

log = logging.getLogger(__name__)

#: Most objects written at once when many ids are revoked together (a group's).
_PARALLEL_PUTS = 16


def remember(store: ObjectStore, task_ids: Iterable[str]) -> int:
    """Keep ``task_ids`` as revoked now; return how many. Every id is checked first."""
    keys = [revoked_id_key(task_id) for task_id in task_ids]
    if len(keys) == 1:
        store.put(keys[0], b"")
    elif keys:
        with ThreadPoolExecutor(min(_PARALLEL_PUTS, len(keys))) as pool:
            list(pool.map(lambda key: store.put(key, b""), keys))
    return len(keys)


def stamped_headers(headers: Any) -> dict[str, list[Any]]:
    """``revoke_by_stamped_headers``'s ``headers`` as the worker reads them: name -> values.

    Celery takes a mapping of a stamp's name to a value or a list of values, or,
    from the command line, ``name=value`` strings.
    """
    if isinstance(headers, (list, tuple)) and all(isinstance(h, str) for h in headers):
        pairs = [header.split("=", 1) for header in headers]
        if not all(len(pair) == 2 for pair in pairs):
            raise InvalidArguments(f"stamped headers must be name=value, not {headers!r:.80}")
        headers = {name: value for name, value in pairs}
    if not isinstance(headers, Mapping) or not all(isinstance(k, str) for k in headers):
        raise InvalidArguments(f"stamped headers must map names to values, not {headers!r:.80}")
    return {name: _as_list(values) for name, values in headers.items()}


def remember_stamped(store: ObjectStore, headers: Any) -> dict[str, list[Any]]:
    """Keep a revocation by stamped ``headers`` as made now; return them as stored."""
    stamps = stamped_headers(headers)
    if not stamps:
        return stamps
    document = _stamped_document(stamps)
    store.put(revoked_stamped_key(document), document)
    return stamps


def _stamped_document(stamps: Mapping[str, list[Any]]) -> bytes:
    return json.dumps({"headers": stamps}, sort_keys=True, separators=(",", ":")).encode()


def unexpired(
    listed: Iterable[Listed], *, now: datetime, expires: float
) -> list[tuple[Listed, float]]:
    """The objects of a listing written less than ``expires`` s before ``now``, with their
    ages in seconds, oldest first (a clock slightly behind S3's reads as age 0)."""
    aged = [(item, max(0.0, (now - item.last_modified).total_seconds())) for item in listed]
    return sorted(((item, age) for item, age in aged if age < expires), key=lambda pair: -pair[1])


@dataclass(frozen=True)
class Loaded:
    """What :func:`load_into_worker_state` added."""

    ids: int
    stamped: int


def load_into_worker_state(
    store: ObjectStore,
    *,
    now: datetime | None = None,
    expires: float | None = None,
    revoked: LimitedSet | None = None,
    revoked_stamps: dict[str, Any] | None = None,
    merged: set[tuple[str, datetime]] | None = None,
) -> Loaded:
    """Add the unexpired stored revocations to the worker's (Celery's) revoked set and stamps.

    Each id enters :data:`~celery.worker.state.revoked` with its own age, so it
    expires there when it would have on a worker that heard the broadcast. The
    stamped ones are added to ``merged`` (see :func:`refresh_stamped`).
    """
    now = now or datetime.now(UTC)
    expires = worker_state.REVOKE_EXPIRES if expires is None else expires
    revoked = worker_state.revoked if revoked is None else revoked
    revoked_stamps = worker_state.revoked_stamps if revoked_stamps is None else revoked_stamps
    ids = stamped = 0
    for item, age in unexpired(store.list(REVOKED), now=now, expires=expires):
        task_id = revoked_task_id(item.key)
        if task_id is not None:
            revoked.add(task_id, now=time.monotonic() - age)
            ids += 1
        elif item.key.startswith(REVOKED_STAMPED):
            stamped += _merge_once(store, item, set() if merged is None else merged, revoked_stamps)
    return Loaded(ids, stamped)


def refresh_stamped(
    store: ObjectStore,
    merged: set[tuple[str, datetime]],
    *,
    now: datetime | None = None,
    expires: float | None = None,
    revoked_stamps: dict[str, Any] | None = None,
) -> int:
    """Merge the unexpired revocations by stamped headers whose write (key and
    ``LastModified``) is not in ``merged``; return how many."""
    now = now or datetime.now(UTC)
    expires = worker_state.REVOKE_EXPIRES if expires is None else expires
    revoked_stamps = worker_state.revoked_stamps if revoked_stamps is None else revoked_stamps
    listed = unexpired(store.list(REVOKED_STAMPED), now=now, expires=expires)
    return sum(_merge_once(store, item, merged, revoked_stamps) for item, _ in listed)


def _merge_once(
    store: ObjectStore,
    item: Listed,
    merged: set[tuple[str, datetime]],
    revoked_stamps: dict[str, Any],
) -> int:
    """Merge one stored revocation by stamped headers unless this write of it was; 1 if merged."""
    write = (item.key, item.last_modified)
    if write in merged:
        return 0
    stamps = _read_stamped(store, item.key)
    merged.add(write)
    if not stamps:
        return 0
    _merge_stamps(revoked_stamps, stamps)
    return 1


def _as_list(value: Any) -> list[Any]:
    """Celery's ``maybe_list``: nothing, one value, or a list, tuple or set of them."""
    if value is None:
        return []
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    return [value]


def _read_stamped(store: ObjectStore, key: str) -> dict[str, list[Any]] | None:
    """The headers of the stored revocation ``key``; None, with a warning, if unreadable.

    Anyone who can write to the bucket can write here: one object that cannot be
    read (not JSON, nested too deep, the wrong shape) is skipped, never the ones after it.
    """
    data = store.get(key)  # an S3 error is raised: the write is tried again next time
    if data is None:
        return None
    try:
        text = data.decode("utf-8")
        check_depth(text)
        document = json.loads(text)
        return stamped_headers(document["headers"]) if document else None
    except (ValueError, TypeError, KeyError, InvalidArguments, LimitExceeded) as exc:
        log.warning("ignoring stored revocation %s: %s", key, exc)
        return None


def _merge_stamps(revoked_stamps: dict[str, Any], stamps: Mapping[str, list[Any]]) -> None:
    """What Celery's ``revoke_by_stamped_headers`` control command does with its headers,
    without the duplicates, in time linear in the values (a set of those already known)."""
    for name, values in stamps.items():
        known = _as_list(revoked_stamps.get(name))
        seen = {_hashable(value) for value in known}
        for value in values:
            mark = _hashable(value)
            if mark not in seen:
                seen.add(mark)
                known.append(value)
        revoked_stamps[name] = known


def _hashable(value: Any) -> Any:
    """``value`` as a set member: itself, or the JSON of a list or an object."""
    try:
        hash(value)
    except TypeError:
        return ("json", json.dumps(value, sort_keys=True, default=repr))
    return value


#: The control commands that revoke task ids (``terminate`` is ``revoke`` with terminate).
_REVOKING_IDS = frozenset({"revoke", "terminate"})
#: The arguments of the revoking control commands that name what is revoked.
_REVOKING = frozenset({"task_id", "headers"})


class _Node(pidbox.Node):
    """The worker's end of the control mailbox: large arguments are fetched first.

    A broadcast too large for a message (a revocation of thousands of ids, or
    ``GroupResult.revoke()`` of a large group) travels with its arguments in S3
    (:mod:`cloudworker.codec`); the worker's pidbox got the references themselves and
    ignored the revocation, which only restarted workers (reading S3) honoured.
    Only objects under one broadcast's own prefix (``payloads/control/<hex>/``)
    are read, never a task's arguments.
    """

    def handle_message(self, body: Any, message: Any = None) -> Any:
        arguments = body.get("arguments") if isinstance(body, dict) else None
        ref = _first_ref(arguments)
        if ref is not None:
            under = control_payload_dir(ref.key)
            try:
                if under is None:
                    raise PayloadError(f"{ref.key!r:.120} is not a control payload")
                codec = self.state.app.services.codec  # type: ignore[union-attr]
                body = {**body, "arguments": codec.resolve(arguments, under=under)}
            except Exception as exc:  # noqa: BLE001 - one command, never the worker
                log.warning("ignored control command %r: %s", body.get("method"), exc)
                return None
        return super().handle_message(body, message)  # type: ignore[no-untyped-call]

    def reply(self, data: Any, exchange: Any, routing_key: Any, ticket: Any, **kwargs: Any) -> None:
        """kombu's, with a reply the endpoint refuses costing only that reply.

        The command has run; a refused ``SendMessage`` of its reply (the caller's
        receiver queue gone, an endpoint fault) made Celery log the command as
        failed, with a traceback. The caller times out waiting, as for a reply lost.
        """
        try:
            super().reply(data, exchange, routing_key, ticket, **kwargs)  # type: ignore[no-untyped-call]
        except (ClientError, BotoCoreError) as exc:
            log.warning("could not send the reply to a control command: %s", exc)


def _first_ref(value: Any) -> PayloadRef | None:
    if isinstance(value, PayloadRef):
        return value
    items = value.values() if isinstance(value, dict) else value
    if isinstance(items, (list, tuple)) or isinstance(value, dict):
        for item in items:
            found = _first_ref(item)
            if found is not None:
                return found
    return None


class _Mailbox(pidbox.Mailbox):
    node_cls = _Node


class Control(control.Control):  # type: ignore[misc]
    """Celery's ``app.control``: a revocation is written to S3 before it is broadcast.

    A broadcast whose arguments are too large for a message puts them under a
    prefix of its own in S3 (``payloads/control/<hex>/``), which workers read.
    """

    Mailbox = _Mailbox

    def broadcast(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        destination: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        # Every revocation passes here: revoke(), terminate() and
        # revoke_by_stamped_headers() call broadcast(), and so does `celery control`.
        if not destination:
            given = {**(arguments or {}), **{k: v for k, v in kwargs.items() if k in _REVOKING}}
            if command in _REVOKING_IDS:
                remember(self.app.services.store(), _as_list(given.get("task_id")))
            elif command == "revoke_by_stamped_headers":
                stamps = remember_stamped(self.app.services.store(), given.get("headers") or {})
                if stamps and isinstance(arguments, Mapping):
                    # Names the stored write, so that a worker that merged it from S3
                    # already (a task came first) does not merge it again (see _not_again).
                    stored = revoked_stamped_key(_stamped_document(stamps))
                    arguments = {**arguments, STORED_ARGUMENT: stored}
        with payload_prefix(control_payload_prefix()):
            return super().broadcast(command, arguments, destination, *args, **kwargs)


class StoredRevocations(bootsteps.StartStopStep):  # type: ignore[misc]
    """A worker bootstep: load the stored revocations when the worker starts.

    The consumer is the worker's last step, so this runs before any task is
    received. A worker that cannot read them logs the error and starts anyway; it
    then refuses only the revocations it hears of by broadcast. While it runs, a
    received task with stamped headers first merges the new revocations by
    stamped headers (Celery's ``task_received`` signal comes before the worker
    checks whether the task is revoked).
    """

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._app = parent.app
        self._services = parent.app.services
        self._merged: set[tuple[str, datetime]] = set()

    def merged(self, key: str) -> bool:
        """Whether a write of stored revocation ``key`` was merged into this worker."""
        return any(merged_key == key for merged_key, _ in self._merged)

    def start(self, parent: Any) -> None:
        _workers[id(self._app)] = self
        signals.task_received.connect(self._received, weak=False)
        try:
            loaded = load_into_worker_state(self._services.store(), merged=self._merged)
        except (ClientError, BotoCoreError) as exc:
            log.warning("could not load the stored revocations (%s): %s", REVOKED, exc)
            return
        except Exception:
            log.exception("could not load the stored revocations (%s)", REVOKED)
            return
        log.info(
            "loaded %d revoked task id(s) and %d revocation(s) by stamped headers from %s",
            loaded.ids,
            loaded.stamped,
            REVOKED,
        )

    def stop(self, parent: Any) -> None:
        if _workers.get(id(self._app)) is self:
            del _workers[id(self._app)]
        signals.task_received.disconnect(self._received)

    def _received(self, sender: Any = None, request: Any = None, **kwargs: Any) -> None:
        """A task was received: if it is stamped, merge the new stamped revocations first."""
        if getattr(sender, "app", None) is not self._app:
            return  # another worker's, in the same process (tests)
        if not getattr(request, "stamped_headers", None):
            return
        try:
            added = refresh_stamped(self._services.store(), self._merged)
        except (ClientError, BotoCoreError) as exc:
            log.warning("could not read the stored revocations by stamped headers: %s", exc)
            return
        except Exception:
            log.exception("could not read the stored revocations by stamped headers")
            return
        if added:
            log.info("merged %d new revocation(s) by stamped headers from S3", added)


#: The StoredRevocations step of each running worker's app, by id (one per process, or one
#: per embedded worker in tests); a step removes itself when it stops.
_workers: dict[int, StoredRevocations] = {}
#: The broadcast argument naming a revocation's stored write (``revoked/stamped/<sha>.json``).
STORED_ARGUMENT = "cloudworker_stored"
_celery_revoke_by_stamped_headers = worker_control.Panel.data["revoke_by_stamped_headers"]


@worker_control.control_command(  # type: ignore[untyped-decorator]
    variadic="headers", signature="[key1=value1 [key2=value2 [... [keyN=valueN]]]]"
)
def revoke_by_stamped_headers(
    state: Any, headers: Any, terminate: bool = False, signal: Any = None, **kwargs: Any
) -> Any:
    """Celery's command; a revocation the worker merged from S3 already is not merged again.

    A task carrying the stamps often reaches the worker before the broadcast does,
    and the worker then merges the stored revocation first (StoredRevocations). If
    the worker's stamps were cleared in between (Celery's own tests do, after each
    case), the late broadcast brought the old revocation back and refused the next
    task with those stamps. Running tasks are still terminated as Celery does.
    """
    stored = kwargs.pop(STORED_ARGUMENT, None)
    worker = _workers.get(id(getattr(state, "app", None)))
    if not (isinstance(stored, str) and worker is not None and worker.merged(stored)):
        return _celery_revoke_by_stamped_headers(state, headers, terminate, signal, **kwargs)
    kept = dict(worker_state.revoked_stamps)
    try:
        return _celery_revoke_by_stamped_headers(state, headers, terminate, signal, **kwargs)
    finally:
        worker_state.revoked_stamps.clear()
        worker_state.revoked_stamps.update(kept)
