"""The result backend: results kept in S3, pushed to the caller's response queue.

Worker side, when a task ends (success, failure, revocation), the full result
record (Celery's meta: state, result or error with its type and message,
traceback, date done) is written to ``results/<task_id>.json`` with a
conditional write, so the first result of a task wins and a duplicate execution
never replaces it. A notice goes to the response queue named by the task's
``reply_to``: the record itself when it is small, otherwise a pointer to S3. On
a message's first delivery the notice is sent while the PUT runs, so the caller
does not wait for S3; the task is acknowledged once both are done. A redelivered
task (another run may have answered) stores first and notifies with the result
that stood. For most successes all of this runs on a thread of the pool process,
which takes its next task meanwhile; that thread acknowledges the task once it
is done (:mod:`~cloudworker.results.finishing`). A client that gets a notice may
find the record in S3 a few milliseconds later than the notice; every other
process reads S3 only.

Client side, ``AsyncResult.get()`` waits by long-polling this process's own
response queue (:class:`~cloudworker.results.mailbox.Mailbox`), so an answer arrives as soon
as it is sent, with no S3 polling loop. The queue is created on the first wait,
not on the first send. S3 is read only for a task this process did not send
(``AsyncResult(task_id).get()`` from a new process), for one it sent before its
queue existed (once, when the queue does), and, as a safety net, after each
long poll of ``wait_seconds`` that brought nothing (a notice that was lost, or a
queue reaped while the client slept).

States before the end (``STARTED``, on by default; ``RETRY``; custom states
from ``update_state``) are kept too, apart from the result: the latest one in
``results/<task_id>/state.json``, written and pushed at most once per
``CLOUDWORKER_STATE_INTERVAL`` per task (:mod:`cloudworker.results.progress`), so reporting
progress in a tight loop stays cheap and a short task costs nothing extra. A
caller sees them as ``AsyncResult.state``/``.info``, and ``get(on_message=...)``
is called back with each one as it is pushed, then with the result.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from contextvars import ContextVar
from functools import partial
from typing import TYPE_CHECKING, Any

from celery import states
from celery._state import get_current_task
from celery.app.task import Context
from celery.backends.base import BaseBackend
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import result_from_tuple
from kombu.exceptions import EncodeError

from cloudworker.aws import is_transient
from cloudworker.codec import payload_prefix
from cloudworker.errors import InvalidMessage
from cloudworker.keys import group_key, result_key, result_payload_prefix, state_key
from cloudworker.results.chords import ChordJoin
from cloudworker.results.finishing import (
    finished_in_background,
    stored_or_redelivered,
    unstored,
)
from cloudworker.results.mailbox import is_stored_only, notice_state

if TYPE_CHECKING:
    from celery import Celery

    from cloudworker.services import Services

__all__ = ["CloudworkerBackend", "result_key"]

log = logging.getLogger(__name__)

_PENDING: dict[str, Any] = {"status": states.PENDING, "result": None}
#: Set around a send whose ``reply_to`` is another process's queue (see ``replies_to``).
_REPLIES_ELSEWHERE: ContextVar[bool] = ContextVar("cloudworker_replies_elsewhere", default=False)
#: The notices held back while a failed chord part's failure propagates (mark_as_failure):
#: the part's id, and (reply_to, task_id, state, record) in the order they were stored.
_HELD: ContextVar[tuple[str, list[tuple[Any, ...]]] | None] = ContextVar(
    "cloudworker_held_notice", default=None
)
#: Set while a failure about to be raised has its parents checked (wait_for).
_CHECKING_PARENTS: ContextVar[bool] = ContextVar("cloudworker_checking_parents", default=False)
#: Longest pause between two S3 reads while waiting on a task another process sent.
_MAX_STORE_INTERVAL = 5.0
#: When (seconds after its queue was made) a task sent before it is read from S3: a
#: notice that went nowhere may have gone beside a PUT not yet done at the first read,
#: and a queue just created may be unknown to a worker's GetQueueUrl for about a second.
_EARLY_READS = (0.0, 0.1, 0.3, 1.0)
#: The field of a result record written by the task's own run (see _put_and_notify).
OWN_RUN = "own_run"
#: Conditional writes tried when a run's result replaces one its run did not write.
_REPLACE_ATTEMPTS = 3


class CloudworkerBackend(BaseBackend):  # type: ignore[misc]
    """Celery result backend: S3 for keeping, the caller's SQS queue for pushing."""

    persistent = True
    supports_native_join = False
    supports_autoexpire = False

    def __init__(self, app: Celery, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(app, url=url, **kwargs)
        from cloudworker.application import adopt  # the app is adopted when it is made

        self.services: Services = adopt(app).services
        self.chords = ChordJoin(self)
        #: Callers of tasks failed on their behalf (a chord's body), by task id: see answering.
        self._callers: dict[str, str] = {}

    # -- client side ------------------------------------------------------------------------

    def reply_address(self) -> str:
        """The name of this process's response queue, sent as ``reply_to``."""
        return self.services.mailbox.name

    @contextlib.contextmanager
    def replies_to(self, reply_to: str | None) -> Iterator[None]:
        """Around one send: whether its answer comes to this process's queue.

        Celery gives every step of a canvas the caller's ``reply_to``, so a worker
        that sends the next steps (a chain, a group in a chain, a chord's header)
        sends tasks whose notices go to the caller, not to it. Such a task is not
        expected here, and reading its state (``chord_unlock`` does) goes to S3.
        """
        elsewhere = bool(reply_to) and reply_to != self.reply_address()
        token = _REPLIES_ELSEWHERE.set(elsewhere)
        try:
            yield
        finally:
            _REPLIES_ELSEWHERE.reset(token)

    def on_task_call(self, producer: Any, task_id: str) -> dict[str, Any]:
        if not _REPLIES_ELSEWHERE.get():
            self.services.mailbox.expect(task_id)
        return {}

    def wait_for_pending(  # noqa: PLR0917 - Celery's signature
        self,
        result: Any,
        timeout: float | None = None,
        interval: float = 0.5,
        no_ack: bool = True,
        on_message: Any = None,
        on_interval: Any = None,
        callback: Any = None,
        propagate: bool = True,
    ) -> Any:
        """Celery's, plus ``on_message``: called with each state's meta, then the result's."""
        self._ensure_not_eager()
        meta = self.wait_for(
            result.id,
            timeout=timeout,
            interval=interval,
            on_interval=on_interval,
            no_ack=no_ack,
            on_message=on_message,
        )
        if meta:
            result._maybe_set_cache(meta)
            return result.maybe_throw(propagate=propagate, callback=callback)
        return None

    def wait_for(  # noqa: PLR0917 - Celery's signature
        self,
        task_id: str,
        timeout: float | None = None,
        interval: float = 0.5,
        no_ack: bool = True,
        on_interval: Any = None,
        on_message: Any = None,
    ) -> dict[str, Any]:
        self._ensure_not_eager()
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.services.mailbox.sent(task_id):
            meta = self._wait_on_store(task_id, deadline, interval, on_interval, on_message)
        else:
            meta = self._wait_on_mailbox(task_id, deadline, on_interval, on_message)
        if on_message is not None:
            on_message(meta)
        if on_interval is not None and meta.get("status") in states.PROPAGATE_STATES:
            # Celery checks a result's parents on each interval and raises the first
            # failure up the chain (a chord's failed header task rather than the
            # body's ChordError): once more now, reading S3 for a parent whose notice
            # has not come yet (a failed chord part's notice follows the failures it
            # causes: mark_as_failure), so the caller gets the cause, as with Redis.
            token = _CHECKING_PARENTS.set(True)
            try:
                on_interval()
            finally:
                _CHECKING_PARENTS.reset(token)
        return meta

    def _wait_on_mailbox(
        self, task_id: str, deadline: float | None, on_interval: Any, on_message: Any
    ) -> dict[str, Any]:
        mailbox = self.services.mailbox
        wait = self.services.settings.wait_seconds
        next_check = time.monotonic() + wait
        # The S3 reads (seconds after the first wait) of a task sent before this process
        # had a queue: its notice may have gone nowhere (_EARLY_READS).
        early = list(_EARLY_READS) if mailbox.sent_early(task_id) else []
        mailbox.open()
        opened = time.monotonic()
        if early:
            next_check = opened + early.pop(0)
        # The last state notice passed to on_message ("" for none; None: not watching).
        seen: str | None = "" if on_message is not None else None
        while True:
            meta = self._meta_from_mailbox(task_id)
            if meta is not None:
                return meta
            if time.monotonic() >= next_check:
                # No notice for a whole long poll: look in S3, in case the notice was
                # lost (the worker could not send it). This is the only S3 read for
                # our own tasks; it is per task, so a busy mailbox does not hide it.
                next_check = opened + early.pop(0) if early else time.monotonic() + wait
                meta = self._read_store(task_id)
                if meta["status"] in states.READY_STATES:
                    return meta
            remaining = _remaining(deadline)
            slice_ = max(0.0, next_check - time.monotonic())
            # Returns as soon as any thread's poll files this task's notice.
            body = mailbox.wait(
                task_id,
                slice_ if remaining is None else min(slice_, remaining),
                states_after=seen,
            )
            if (
                seen is not None
                and body is not None
                and body != seen
                and notice_state(body) not in states.READY_STATES
            ):
                seen = body
                on_message(self._meta_from_notice(task_id, body))
            if on_interval:
                on_interval()

    def _wait_on_store(
        self,
        task_id: str,
        deadline: float | None,
        interval: float,
        on_interval: Any,
        on_message: Any,
    ) -> dict[str, Any]:
        """Read S3 at growing intervals, and meanwhile listen on this process's queue.

        A task this process did not send may still answer here: Celery gives every
        step of a canvas the caller's ``reply_to``, so the steps a worker sends
        (a chain's next task, a group in a chain, a chord's body) notify the caller.
        Where this process has a response queue, the wait between two S3 reads is
        a wait on it, which ends as soon as the notice comes: ``chain.get()`` is
        answered by push, not by the next S3 read up to 5 s later.
        """
        mailbox = self.services.mailbox
        pause = max(interval, 0.05)
        seen: tuple[Any, Any] | None = None
        while True:
            meta = self._meta_from_mailbox(task_id)
            if meta is not None:
                return meta
            meta = self._read_store(task_id, running=on_message is not None)
            if meta["status"] in states.READY_STATES:
                return meta
            current = (meta["status"], meta.get("result"))
            if on_message is not None and meta["status"] != states.PENDING and current != seen:
                seen = current
                on_message(meta)
            remaining = _remaining(deadline)
            if on_interval:
                on_interval()
            slice_ = pause if remaining is None else min(pause, remaining)
            if mailbox.url is not None:
                mailbox.wait(task_id, slice_)
            else:
                time.sleep(slice_)
            pause = min(pause * 1.5, _MAX_STORE_INTERVAL)

    def _get_task_meta_for(self, task_id: str) -> dict[str, Any]:
        mailbox = self.services.mailbox
        if mailbox.sent(task_id) and not mailbox.sent_early(task_id):
            meta = self._meta_from_mailbox(task_id)
            if meta is None:
                mailbox.poll(0)
                meta = self._meta_from_mailbox(task_id)
            if meta is None and _CHECKING_PARENTS.get():
                meta = self._read_store(task_id)  # its notice may be held back
                if meta["status"] not in states.READY_STATES:
                    meta = None
            if meta is None:
                body = mailbox.state_notice(task_id)
                if body is not None:
                    meta = self._meta_from_notice(task_id, body)
            return meta if meta is not None else dict(_PENDING)
        return self._read_store(task_id, running=True)

    def _meta_from_mailbox(self, task_id: str) -> dict[str, Any] | None:
        """The task's result, if its final notice has come."""
        body = self.services.mailbox.notice(task_id)
        return None if body is None else self._meta_from_notice(task_id, body)

    def _meta_from_notice(self, task_id: str, body: str) -> dict[str, Any]:
        if is_stored_only(body):
            return self._read_store(task_id, running=notice_state(body) not in states.READY_STATES)
        meta: dict[str, Any] = self.decode_result(body)
        return meta

    def _read_store(self, task_id: str, *, running: bool = False) -> dict[str, Any]:
        """The task's result from S3; with ``running``, else its latest state; else PENDING."""
        store = self.services.store()
        record = store.get(result_key(task_id))
        if record is None and running:
            record = store.get(state_key(task_id))
        if record is None:
            return dict(_PENDING)
        meta: dict[str, Any] = self.decode_result(record)
        return meta

    def exception_to_python(self, exc: Any) -> Any:
        """Celery's, refusing exception types no task's failure can carry.

        A task that raises ``SystemExit``, ``KeyboardInterrupt`` or ``GeneratorExit``
        ends its pool process instead of failing, so a stored failure naming one was
        written by someone else (anyone who can send to a response queue or write
        to the bucket); raised in the waiting client, it made that process exit.
        It becomes :class:`~cloudworker.errors.InvalidMessage` naming what it claimed.
        """
        found = super().exception_to_python(exc)
        if isinstance(found, BaseException) and not isinstance(found, Exception):
            kind = type(found)
            return InvalidMessage(
                f"the result names {kind.__module__}.{kind.__qualname__}, which no task's "
                f"failure can be: {found!r:.200}"
            )
        return found

    def meta_from_decoded(self, meta: dict[str, Any]) -> dict[str, Any]:
        # Large results come back as payload references: fetch them before the
        # caller sees the result.
        if meta.get("status") == states.SUCCESS:
            meta["result"] = self.services.codec.resolve(
                meta.get("result"), under=result_payload_prefix(str(meta.get("task_id")))
            )
        result: dict[str, Any] = super().meta_from_decoded(meta)
        return result

    # -- worker side ------------------------------------------------------------------------

    @contextlib.contextmanager
    def answering(self, callers: dict[str, str]) -> Iterator[None]:
        """Around a failure Celery stores for tasks that never ran, with no request.

        A chord whose header failed fails its body through Celery's
        ``chord_error_from_stack``, which stores the body's result with no request,
        so with no ``reply_to``: the body's caller would find it in S3 only after a
        whole long poll without news. ``callers`` (task id -> ``reply_to``) says
        where those results' notices go.
        """
        self._callers.update(callers)
        try:
            yield
        finally:
            for task_id in callers:
                self._callers.pop(task_id, None)

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        *,
        by_update: bool = False,
        **kwargs: Any,
    ) -> Any:
        meta = self._get_result_meta(
            result=result, state=state, traceback=traceback, request=request
        )
        meta["task_id"] = task_id
        by_run = not by_update and state in states.READY_STATES and _running(task_id)
        if by_run:
            meta[OWN_RUN] = True
        record = self._encode_record(task_id, meta)
        reply_to = getattr(request, "reply_to", None) or self._callers.get(task_id)
        if state not in states.READY_STATES:
            if getattr(request, "id", None) == task_id:
                # The worker running the task reports it: throttled (results/progress.py).
                self.services.states.update(task_id, reply_to, state, record)
            else:
                self.services.write_state(task_id, reply_to, state, record)
            return result
        self.services.states.finish(task_id)
        held = _HELD.get()
        first = _first_delivery(request, task_id)
        finish = partial(
            self._put_and_notify, task_id, state, record, reply_to, first=first, by_run=by_run
        )
        if (
            state == states.SUCCESS
            and held is None
            and getattr(request, "id", None) == task_id
            and finished_in_background(
                self.app.tasks.get(getattr(request, "task", None)),
                request,
                self.services.settings,
            )
        ):
            # The pool process goes on; a thread stores it, then acknowledges the task.
            self.services.finisher.submit(task_id, finish)
        else:
            stored_or_redelivered(task_id, partial(finish, held=None if held is None else held[1]))
        return result

    def _encode_record(self, task_id: str, meta: dict[str, Any]) -> str:
        """The JSON of a result record; kombu's ``EncodeError`` if it cannot be stored.

        As Celery's own backends do, an error here is ``EncodeError``, which
        Celery's worker stores as the task's failure (a value that is not JSON,
        such as a set, raised ``TypeError``, which Celery took for a crash). A
        record over ``CLOUDWORKER_MAX_PAYLOAD_BYTES`` is refused whatever holds
        the size: ``bytes`` always were, text and lists were stored whole.
        """
        try:
            with payload_prefix(result_payload_prefix(task_id)):
                # The record lives in S3 already: only its large bytes go to separate objects.
                record = self.services.codec.dumps(meta, whole_document=False)
        except (TypeError, ValueError, OverflowError) as exc:
            raise EncodeError(f"the result of task {task_id} cannot be stored: {exc}") from exc
        limit = self.services.settings.max_payload_bytes
        too_large = _over(record, limit)
        if too_large and meta.get("status") in states.PROPAGATE_STATES:
            # A failure is always stored: its traceback and message cut to fit.
            record = self.services.codec.dumps(_cut(meta, limit // 8), whole_document=False)
            too_large = _over(record, limit)
        if too_large:
            raise EncodeError(
                f"the result of task {task_id} cannot be stored: its record is over the "
                f"limit of {limit:,} bytes (CLOUDWORKER_MAX_PAYLOAD_BYTES)"
            )
        return record

    def _put_and_notify(
        self,
        task_id: str,
        state: str,
        record: str,
        reply_to: str | None,
        *,
        first: bool,
        by_run: bool = False,
        held: list[tuple[Any, ...]] | None = None,
    ) -> None:
        """Store a final ``record`` in S3 and notify the caller.

        The first record a task's own run stores stands (a redelivery finds it, and
        notifies with it). A record written before by anything else (a refusal of a
        message that named this task in its chain, ``update_state`` or
        ``store_result`` for its id) gives way to the run's: the result a caller
        reads from S3 is the one the task's run produced, as the caller it notifies gets.
        """
        store = self.services.store()
        key = result_key(task_id)
        # On a task's first delivery a notice that carries its record goes beside
        # the S3 PUT, not after it: the caller's answer does not wait for S3. (A
        # notice that points to S3, for a large record, waits for the PUT.) This
        # returns only once both are done; the task is acknowledged after.
        beside = (
            self.services.notifier.submit(reply_to, task_id, state, record)
            if held is None
            and reply_to
            and len(record) <= self.services.settings.inline_max_bytes
            and first
            else None
        )
        try:
            stored = store.put(key, record.encode("utf-8"), only_if_absent=True)
        finally:
            if beside is not None:
                beside.result()
        if not stored:
            standing = self._standing(task_id, record, by_run)
            if standing is not None:
                # A previous execution of this task already answered: that answer stands.
                log.info("task %s already has a result; keeping the first one", task_id)
                if beside is not None and standing != record:
                    # Two first deliveries at once (a visibility that could not be
                    # extended): the caller keeps the first notice it receives.
                    log.warning("task %s: its notice went beside another run's result", task_id)
                record = standing
        if beside is not None:
            return
        if held is not None:
            held.append((reply_to, task_id, state, record))
        else:
            self.services.notifier.send(reply_to, task_id, state, record)

    def _standing(self, task_id: str, record: str, by_run: bool) -> str | None:
        """After a first write was refused: the record that stands, None if ``record`` does.

        ``record``, written by the task's own run, replaces one that was not
        (a conditional write on the version read, so two runs never both replace it).
        """
        store, key = self.services.store(), result_key(task_id)
        standing: str | None = None
        for _ in range(_REPLACE_ATTEMPTS):
            found = store.read(key)
            if found is None:  # deleted meanwhile (forget): this one is the first again
                if store.put(key, record.encode("utf-8"), only_if_absent=True):
                    return None
                continue
            data, version = found
            standing = data.decode("utf-8")
            if not by_run or _by_own_run(standing):
                return standing
            if store.put(key, record.encode("utf-8"), replacing=version):
                log.warning(
                    "task %s: its run's result replaced one not written by its run", task_id
                )
                return None
        return standing

    def mark_as_failure(  # noqa: PLR0917 - Celery's signature
        self,
        task_id: str,
        exc: BaseException,
        traceback: str | None = None,
        request: Any = None,
        store_result: bool = True,
        call_errbacks: bool = True,
        state: str = states.FAILURE,
    ) -> None:
        """Celery's, with a failed chord part's notice sent after what it causes.

        The part's result is stored first (the join counts it), and its failure
        propagates to the chord's body and the steps chained after it; only then
        are the callers told, the last step first and the part itself last. A
        caller raises on the first failure it sees among a result's parents
        (Celery checks them as it waits), and then finds the steps after it failed
        too, as it would with Redis, where all of this takes a few milliseconds.
        Every result is in S3 before any notice goes.
        """
        if not (request is not None and getattr(request, "chord", None) and store_result):
            super().mark_as_failure(
                task_id, exc, traceback, request, store_result, call_errbacks, state
            )
            return
        held: list[tuple[Any, ...]] = []
        token = _HELD.set((task_id, held))
        try:
            super().mark_as_failure(
                task_id, exc, traceback, request, store_result, call_errbacks, state
            )
        finally:
            _HELD.reset(token)
            own = [notice for notice in held if notice[1] == task_id]
            caused = [notice for notice in held if notice[1] != task_id]
            for notice in [*reversed(caused), *own]:
                self.services.notifier.send(*notice)

    def _fail_chain(
        self,
        chain: Any,
        exc: BaseException,
        traceback: str | None = None,
        store_result: bool = True,
        state: str = states.FAILURE,
    ) -> None:
        """Celery's, plus the members of a group chained after the failed task.

        ``add.s() | fail.s() | group(a, b)``: the group is never applied, and the
        caller's ``GroupResult`` waits on its members, so each is marked failed
        (Celery marks only the group's own id, and Redis hangs: celery#6437).
        """
        super()._fail_chain(chain, exc, traceback, store_result, state)
        if not (store_result and state in states.PROPAGATE_STATES):
            return
        for element in _group_members_chained(chain):
            context = Context(element)
            context.update(context.options)
            context.id = context.options.get("task_id")
            context.group = context.options.get("group_id")
            if context.id is not None:
                self.store_result(context.id, exc, state, traceback=traceback, request=context)

    # -- chords and groups (results/chords.py) ---------------------------------------------------

    def apply_chord(self, header_result_args: Any, body: Any, **kwargs: Any) -> None:
        """Before a chord's header is sent (no ``chord_unlock``: the parts join it).

        A chord applied by a client: its body, sent later by a worker, answers to
        this process's queue like the header tasks, so ``get()`` is pushed the result.
        """
        self.ensure_chords_allowed()
        mine = self.reply_address()
        # Celery's freeze() already gave the body this process's address (thread_oid).
        if get_current_task() is None and body.options.get("reply_to") in (None, mine):
            body.options["reply_to"] = mine
            if body.id:
                self.services.mailbox.expect(body.id)
        self.chords.apply(self.app.GroupResult(*header_result_args), body)

    def set_chord_size(self, group_id: str, chord_size: int) -> None:
        self.chords.set_size(group_id, chord_size)

    def add_to_chord(self, chord_id: str, result: Any) -> None:
        task = get_current_task()
        self.chords.add(chord_id, result.id, task.request if task is not None else None)

    def on_chord_part_return(self, request: Any, state: str, result: Any, **kwargs: Any) -> None:
        if unstored(getattr(request, "id", None)):
            return  # its message comes back: that run counts the part
        failed = state in states.PROPAGATE_STATES and isinstance(result, BaseException)
        self.chords.part_returned(request, result if failed else None)

    def _call_task_errbacks(self, request: Any, exc: Any, traceback: Any) -> None:
        """Celery's, unless the failure could not be stored: its redelivery calls them."""
        if not unstored(getattr(request, "id", None)):
            super()._call_task_errbacks(request, exc, traceback)

    def _save_group(self, group_id: str, result: Any) -> Any:
        self.services.store().put(
            group_key(group_id), _as_bytes(self.encode({"result": result.as_tuple()}))
        )
        return result

    def _restore_group(self, group_id: str) -> dict[str, Any] | None:
        record = self.services.store().get(group_key(group_id))
        if record is None:
            return None
        meta: dict[str, Any] = self.decode(record)
        meta["result"] = result_from_tuple(meta["result"], self.app)
        return meta

    def _delete_group(self, group_id: str) -> None:
        self.services.store().delete(group_key(group_id))

    def exception_safe_to_retry(self, exc: BaseException) -> bool:
        """Storing and reading results is retried, with backoff, through endpoint faults."""
        return is_transient(exc)

    def _forget(self, task_id: str) -> None:
        self.services.store().delete(result_key(task_id))


def _group_members_chained(chain: Any) -> list[dict[str, Any]]:
    """The member signatures of the groups in a request's ``chain``.

    (Celery unrolls a group nested in a group when it is built.)
    """
    try:
        elements = list(chain)
    except TypeError:
        return []
    return [
        member
        for element in elements
        if isinstance(element, dict) and element.get("subtask_type") == "group"
        for member in (element.get("kwargs") or {}).get("tasks") or ()
        if isinstance(member, dict)
    ]


def _as_bytes(data: str | bytes) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data


def _running(task_id: str) -> bool:
    """Whether this process is running task ``task_id`` now: its own run is storing."""
    task = get_current_task()
    request = getattr(task, "request", None)
    return getattr(request, "id", None) == task_id and not getattr(request, "called_directly", True)


def _by_own_run(record: str) -> bool:
    try:
        meta = json.loads(record)
    except ValueError:
        return False
    return isinstance(meta, dict) and meta.get(OWN_RUN) is True


def _over(record: str, limit: int) -> bool:
    """Whether ``record`` takes more than ``limit`` bytes in UTF-8 (encoded only if it may)."""
    return len(record) > limit or (len(record) * 4 > limit and len(record.encode()) > limit)


def _cut(meta: dict[str, Any], most: int) -> dict[str, Any]:
    """A failure's record with its traceback and its exception's message cut to ``most``."""
    cut = dict(meta)
    if isinstance(cut.get("traceback"), str):
        cut["traceback"] = cut["traceback"][-most:]
    error = cut.get("result")
    if isinstance(error, dict) and "exc_message" in error:
        cut["result"] = {**error, "exc_message": [str(error["exc_message"])[:most]]}
    return cut


def _first_delivery(request: Any, task_id: str) -> bool:
    """Whether ``request`` runs ``task_id`` from its message's first delivery.

    Then no other run of the task can have stored a result, short of a message
    whose visibility could not be extended, so its notice need not wait for the
    S3 record to say which result stands. A redelivery (a crash, a requeue:
    ``ApproximateReceiveCount`` > 1, cloudworker.sqs) stores first and notifies after,
    with the result that stood.
    """
    if getattr(request, "id", None) != task_id:
        return False
    info = getattr(request, "delivery_info", None)
    return isinstance(info, dict) and info.get("redelivered") is False


def _remaining(deadline: float | None) -> float | None:
    """Seconds left before ``deadline`` (None: no deadline); past it, Celery's timeout."""
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise CeleryTimeoutError("The operation timed out.")
    return remaining
