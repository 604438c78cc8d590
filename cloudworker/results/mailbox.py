"""Response queues: where a worker pushes a notice when a task ends, and the caller waits.

The whole concept lives here, both halves and what passes between them:

* **The notice** a worker sends when a task ends (:func:`notice`): the task's
  result record itself when it is small, else a pointer saying the record is
  only in S3. A running task's states (STARTED, RETRY, custom ones) travel the
  same way (:mod:`cloudworker.results.progress`); a final notice is never replaced, and a
  state arriving after it is ignored. :func:`notice_task_id`,
  :func:`notice_state` and :func:`is_stored_only` read one.
* **The client half**, :class:`Mailbox`: each client process owns one SQS queue,
  named ``<prefix>resp-<random>`` and tagged with its creation time and last use
  (:class:`~cloudworker.queues.OwnedQueue`). The queue's name travels with every
  task as Celery's ``reply_to``, but the queue is created only when the process
  first waits: a process that only sends (a web request handler, beat) creates
  nothing, and the notices sent to its name meanwhile are dropped. The results
  of the tasks it sent before its queue existed are read from S3 when it waits
  (:meth:`Mailbox.sent_early`). Waiting is one long poll
  at a time (pushed, not polled on an interval); every notice received is filed
  by task id, so threads waiting on different tasks share the polls: one thread
  receives, without holding the lock, and wakes the others as soon as it has
  filed their notices (see :meth:`Mailbox.wait`). The queue is deleted when the
  process exits; the reaper deletes the queues of processes that crashed
  (:mod:`cloudworker.worker.reaper`).
* **The worker half**, :class:`Notifier`: sends a notice to the queue a task's
  ``reply_to`` names, if it is a response queue of this deployment, resolving
  and remembering queue URLs.

Both are per process: :class:`~cloudworker.services.Services` makes them, and makes
new ones in a forked child (a child must never read its parent's notices).
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from celery import states
from kombu.utils.functional import LRUCache

from cloudworker.errors import ResponseQueueError
from cloudworker.outbox import Outbox
from cloudworker.queues import OwnedQueue, QueueGone, QueueService
from cloudworker.settings import Settings

__all__ = [
    "Mailbox",
    "Notifier",
    "is_stored_only",
    "notice",
    "notice_fields",
    "notice_state",
    "notice_task_id",
    "reply_address_problem",
]

log = logging.getLogger(__name__)

#: How many task ids and notices a process remembers.
_MEMORY = 10_000
#: How many response queue URLs a worker remembers.
_URL_MEMORY = 1024
#: Longest a received notice waits for others to share its DeleteMessageBatch. It stays
#: hidden meanwhile (the queue's visibility timeout), and nobody waits on it.
_DELETE_LINGER = 0.2
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")


# -- the notice ----------------------------------------------------------------------------


def notice(task_id: str, state: str, record: str, *, inline_max_bytes: int) -> str:
    """What a worker sends when ``task_id`` ended: the record, or a pointer to it in S3."""
    if len(record) <= inline_max_bytes:
        return record
    return json.dumps({"task_id": task_id, "status": state, "stored_only": True})


def notice_task_id(body: str) -> str | None:
    """The task a notice is about (None for a body that is not a notice)."""
    return notice_fields(body)[0]


def notice_state(body: str) -> str | None:
    """The state a notice reports (None for a body that is not a notice)."""
    return notice_fields(body)[1]


def notice_fields(body: str) -> tuple[str | None, str | None]:
    """A notice's task id and state, read with one parse (None for what is missing)."""
    try:
        fields = json.loads(body)
        task_id, state = fields.get("task_id"), fields.get("status")
    except (ValueError, AttributeError, RecursionError):
        return None, None
    return (
        task_id if isinstance(task_id, str) else None,
        state if isinstance(state, str) else None,
    )


def is_stored_only(body: str) -> bool:
    """Whether a notice only says that the result is in S3."""
    return bool(json.loads(body).get("stored_only"))


def reply_address_problem(reply_to: Any, settings: Settings) -> str | None:
    """Why ``reply_to`` is not a response queue of this deployment (None: it is, or unset)."""
    if reply_to is None or reply_to == "":
        return None
    prefix = settings.response_queue_prefix
    if (
        isinstance(reply_to, str)
        and reply_to.startswith(prefix)
        and _QUEUE_NAME.fullmatch(reply_to)
        and len(reply_to) > len(prefix)
    ):
        return None
    return f"reply_to {reply_to!r:.80} is not a response queue of this deployment ({prefix}...)"


# -- the client half -------------------------------------------------------------------------


class Mailbox:
    """One process's response queue and the notices it has received."""

    def __init__(self, queues: Callable[[], QueueService], settings: Settings) -> None:
        self._queues = queues
        self._settings = settings
        self._lock = threading.RLock()
        #: Notified whenever notices are filed or the poller role is released.
        self._filed = threading.Condition(self._lock)
        self._name = self._new_name()
        self._queue: OwnedQueue | None = None
        self._closes_at_exit = False
        #: The tasks this process sent: True for those sent before its queue existed.
        self._sent: LRUCache = LRUCache(limit=_MEMORY)  # type: ignore[no-untyped-call]
        self._notices: LRUCache = LRUCache(limit=_MEMORY)  # type: ignore[no-untyped-call]
        #: The latest notice of a state that is not final, per task still running.
        self._states: LRUCache = LRUCache(limit=_MEMORY)  # type: ignore[no-untyped-call]
        #: Whether a thread is receiving for :meth:`wait` (the poller).
        self._polling = False
        # Notices received are deleted by a thread, off the caller's path: the answer
        # does not wait for a DeleteMessageBatch, and deletions of several polls share one.
        self._deletes: Outbox[str, str] = Outbox(
            self._delete_many, name="cloudworker-mailbox-acks", linger=_DELETE_LINGER
        )
        #: Notices received for a task that already had one (a task run twice).
        self.duplicate_notices = 0
        #: Of those, notices whose result differed from the first (never expected).
        self.conflicting_notices = 0

    @property
    def name(self) -> str:
        """The queue's name: the address workers reply to."""
        with self._lock:
            return self._name

    @property
    def url(self) -> str | None:
        """The queue's URL once it exists."""
        queue = self._queue
        return None if queue is None else queue.url

    def expect(self, task_id: str) -> None:
        """Note that this process sends ``task_id`` (no AWS call: see :meth:`open`).

        A notice filed for that id before it was sent is not its answer (anything
        may name an id, a refused message's chain for one): it is forgotten.
        """
        with self._lock:
            self._sent[task_id] = self._queue is None
            self._notices.pop(task_id, None)
            self._states.pop(task_id, None)

    def sent(self, task_id: str) -> bool:
        """Whether this process sent ``task_id`` (so its notice comes here)."""
        return task_id in self._sent

    def sent_early(self, task_id: str) -> bool:
        """Whether ``task_id`` was sent before the queue existed: its notice may be lost."""
        return bool(self._sent.get(task_id))

    def open(self) -> None:
        """Create the queue if it does not exist yet (before a wait)."""
        with self._lock:
            self._ensure_queue()

    def notice(self, task_id: str) -> str | None:
        """The final notice received for ``task_id``, if any."""
        with self._lock:
            found: str | None = self._notices.get(task_id)
            return found

    def state_notice(self, task_id: str) -> str | None:
        """The latest notice of a state that is not final for ``task_id``, if any."""
        with self._lock:
            found: str | None = self._states.get(task_id)
            return found

    def wait(self, task_id: str, timeout: float, *, states_after: str | None = None) -> str | None:
        """The notice for ``task_id``, waiting up to about ``timeout`` seconds; None if none.

        That is its final notice; with ``states_after`` (the last state notice
        the caller saw, or ``""`` for none) also a newer state notice.

        One waiting thread at a time receives (the poller); the others sleep on
        the condition until a poll files notices, so each returns as soon as its
        own notice is filed, whichever thread received it, and no thread's long
        poll holds up another's answer. When the poller leaves (its notice came,
        or its time ran out) a waiter takes the role over. A poller may overrun
        ``timeout`` by under a second (SQS waits whole seconds); the others do not.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                while True:
                    found = self._notices.get(task_id)
                    if found is None and states_after is not None:
                        latest = self._states.get(task_id)
                        if latest is not None and latest != states_after:
                            found = latest
                    if found is not None:
                        return str(found)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    if not self._polling:
                        break
                    self._filed.wait(remaining)
                self._polling = True
            try:
                self.poll(remaining)
            finally:
                with self._lock:
                    self._polling = False
                    self._filed.notify_all()

    def poll(self, wait_seconds: float) -> int:
        """Receive once (long poll up to ``wait_seconds``); file the notices; count them.

        The receive runs without the lock, so that other threads can read and
        file notices meanwhile; concurrent polls are safe (SQS hands each message
        to one receiver), but :meth:`wait` has only one thread poll at a time.
        """
        with self._lock:
            url = self._ensure_queue()
        wait = max(0, min(self._settings.wait_seconds, math.ceil(wait_seconds)))
        try:
            messages = self._queues().receive(url, wait_seconds=wait)
        except QueueGone:
            with self._lock:
                if self.url == url:  # not renewed yet by another thread
                    log.warning("response queue %s vanished; a new one will be created", self._name)
                    self._renew()
            return 0
        if messages:
            with self._lock:
                self._file([m.body for m in messages])
                self._filed.notify_all()
            for message in messages:
                self._deletes.put(url, message.receipt).add_done_callback(_log_failed_delete)
        return len(messages)

    def _delete_many(self, url: str, receipts: Sequence[str]) -> None:
        self._queues().delete_messages(url, receipts)

    def _file(self, bodies: list[str]) -> None:
        # Called with the lock held.
        for body in bodies:
            task_id, state = notice_fields(body)
            if task_id is None or state is None:
                log.warning("ignoring a malformed notice on the response queue: %.80r", body)
                continue
            if state not in states.READY_STATES:
                if task_id not in self._notices:  # a state after the end is stale
                    self._states[task_id] = body
                continue
            self._states.pop(task_id, None)
            first = self._notices.get(task_id)
            if first is None:
                self._notices[task_id] = body
                continue
            # A rerun (after a crash) notifies again with the stored, first
            # result; the first notice stands either way.
            self.duplicate_notices += 1
            if first != body:
                self.conflicting_notices += 1

    def close(self) -> None:
        """Delete the queue (at exit); a later task creates a new one."""
        with self._lock:
            queue, self._queue = self._queue, None
        if queue is not None:
            try:
                self._queues().delete_queue(queue.url)
            except Exception as exc:  # noqa: BLE001 - at exit, a warning is all we can do
                log.warning("could not delete response queue %s: %s", self._name, exc)

    def disown(self) -> None:
        """Forget the queue without deleting it: it is a parent process's (after a fork)."""
        self._queue = None
        self._deletes = Outbox(
            self._delete_many, name="cloudworker-mailbox-acks", linger=_DELETE_LINGER
        )
        self._lock = threading.RLock()  # it may have been held by another thread at fork
        self._filed = threading.Condition(self._lock)

    def _new_name(self) -> str:
        return f"{self._settings.response_queue_prefix}{uuid.uuid4().hex}"

    def _renew(self) -> None:
        # SQS refuses to re-create a deleted queue's name for 60 s, so take a new
        # name. Notices already sent to the old one are lost; the backend's S3
        # safety check finds those results.
        self._name = self._new_name()
        self._queue = None

    def _ensure_queue(self) -> str:
        queue = self._queue
        if queue is not None:
            try:
                queue.touch(self._queues(), every=self._settings.response_queue_max_age / 4)
                return queue.url
            except QueueGone:
                log.warning("response queue %s was reaped; a new one will be created", self._name)
                self._renew()
        retention = min(max(self._settings.response_queue_max_age, 60), 1_209_600)
        try:
            self._queue = OwnedQueue.create(self._queues(), self._name, retention=retention)
        except Exception as exc:
            raise ResponseQueueError(f"cannot create response queue {self._name}: {exc}") from exc
        if not self._closes_at_exit:
            self._closes_at_exit = True
            atexit.register(self.close)
        return self._queue.url


# -- the worker half -------------------------------------------------------------------------


def _log_failed_delete(deleted: Future[None]) -> None:
    exc = deleted.exception()
    if exc is not None and not isinstance(exc, QueueGone):  # gone: deleted with its queue
        log.warning("could not delete a received notice (it may come again): %s", exc)


class Notifier:
    """Sends notices to the response queues tasks name as their ``reply_to``.

    Every notice goes through one :class:`~cloudworker.outbox.Outbox` per process:
    notices for the same response queue that are ready together (tasks ending
    at once in this process's threads) share one ``SendMessageBatch``.
    """

    def __init__(self, queues: Callable[[], QueueService], settings: Settings) -> None:
        self._queues = queues
        self._settings = settings
        self._urls: LRUCache = LRUCache(limit=_URL_MEMORY)  # type: ignore[no-untyped-call]
        # Its one thread starts on the first notice, in the process that sends it.
        self._outbox: Outbox[str, str] = Outbox(self._send, name="cloudworker-notices")

    def submit(self, reply_to: str | None, task_id: str, state: str, record: str) -> Future[None]:
        """Start sending the notice; the future is done once it went out or failed.

        The future never holds an error: a queue that is gone or cannot be
        reached costs only the push (logged here), since the waiting client
        also looks in S3. When the notice carries the record itself, the
        record may still be on its way to S3 meanwhile.
        """
        done: Future[None] = Future()
        if not reply_to or reply_address_problem(reply_to, self._settings) is not None:
            done.set_result(None)
            return done
        body = notice(task_id, state, record, inline_max_bytes=self._settings.inline_max_bytes)

        def settle(sent: Future[None]) -> None:
            exc = sent.exception()
            if isinstance(exc, QueueGone):
                # Not made yet (its process only sent, so far) or gone: the result is in S3.
                log.debug("response queue %s does not exist; the result stays in S3", reply_to)
            elif exc is not None:  # the waiting client also looks in S3
                log.warning("could not notify %s of task %s: %s", reply_to, task_id, exc)
            done.set_result(None)

        self._outbox.put(reply_to, body).add_done_callback(settle)
        return done

    def send(self, reply_to: str | None, task_id: str, state: str, record: str) -> None:
        """Notify ``reply_to`` of ``task_id``'s ``state`` and wait until it went out.

        Never raises (see :meth:`submit`).
        """
        self.submit(reply_to, task_id, state, record).result()

    def close(self, timeout: float | None = None) -> None:
        """Send the notices still waiting (at most ``timeout`` s), then stop the thread."""
        self._outbox.close(timeout)

    def _send(self, name: str, bodies: Sequence[str]) -> None:
        queues = self._queues()
        url = self._urls.get(name)
        if url is None:
            url = self._urls[name] = queues.url_of(name)
        try:
            queues.send_many(url, bodies)
        except QueueGone:
            self._urls.pop(name, None)
            raise
