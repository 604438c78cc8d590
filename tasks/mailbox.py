"""The client's response queue: where workers push a notice when a task ends.

Each client process owns one SQS queue, created on its first task, named
``<prefix>resp-<random>`` and tagged with its creation time and last use. The
queue's name travels with every task as Celery's ``reply_to``. Waiting is one
long poll at a time (pushed, not polled on an interval); every notice received
is filed by task id, so threads waiting on different tasks share the polls:
one thread receives, without holding the lock, and wakes the others as soon as
it has filed their notices (see :meth:`Mailbox.wait`).
The queue is deleted when the process exits; the reaper deletes the queues of
processes that crashed (see :mod:`tasks.reaper`).
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable

from config import Settings
from tasks.errors import ResponseQueueError
from tasks.queues import QueueGone, QueueService

__all__ = ["CREATED_TAG", "SEEN_TAG", "Mailbox"]

log = logging.getLogger(__name__)

CREATED_TAG = "cloudworker:created"
SEEN_TAG = "cloudworker:seen"
#: How many task ids and notices a process remembers.
_MEMORY = 10_000


class _Lru(OrderedDict[str, str]):
    def remember(self, key: str, value: str) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > _MEMORY:
            self.popitem(last=False)


class Mailbox:
    """One process's response queue and the notices it has received."""

    def __init__(self, queues: Callable[[], QueueService], settings: Settings) -> None:
        self._queues = queues
        self._settings = settings
        self._lock = threading.RLock()
        #: Notified whenever notices are filed or the poller role is released.
        self._filed = threading.Condition(self._lock)
        self._pid = -1
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._name = f"{self._settings.response_queue_prefix}{uuid.uuid4().hex}"
        self._url: str | None = None
        self._touched = 0.0
        self._sent = _Lru()
        self._notices = _Lru()
        #: Whether a thread of this process is receiving for :meth:`wait` (the poller).
        self._polling = False
        #: Notices received for a task that already had one (a task run twice).
        self.duplicate_notices = 0
        #: Of those, notices whose result differed from the first (never expected).
        self.conflicting_notices = 0

    def _own(self) -> None:
        # A forked child must not share its parent's queue: it would steal notices.
        if self._pid != os.getpid():
            self._reset()

    @property
    def name(self) -> str:
        """The queue's name: the address workers reply to."""
        with self._lock:
            self._own()
            return self._name

    @property
    def url(self) -> str | None:
        """The queue's URL once it exists."""
        return self._url

    def expect(self, task_id: str) -> None:
        """Note that this process sent ``task_id``; make sure the queue exists."""
        with self._lock:
            self._own()
            self._sent.remember(task_id, "")
            self._ensure_queue()

    def sent(self, task_id: str) -> bool:
        """Whether this process sent ``task_id`` (so its notice comes here)."""
        with self._lock:
            self._own()
            return task_id in self._sent

    def notice(self, task_id: str) -> str | None:
        """The notice received for ``task_id``, if any."""
        with self._lock:
            return self._notices.get(task_id)

    def wait(self, task_id: str, timeout: float) -> str | None:
        """The notice for ``task_id``, waiting up to about ``timeout`` seconds; None if none.

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
                self._own()  # a forked child has no poller: reset before checking
                while True:
                    notice = self._notices.get(task_id)
                    if notice is not None:
                        return notice
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
            self._own()
            url = self._ensure_queue()
        wait = max(0, min(self._settings.wait_seconds, math.ceil(wait_seconds)))
        try:
            messages = self._queues().receive(url, wait_seconds=wait)
        except QueueGone:
            with self._lock:
                if self._url == url:  # not renewed yet by another thread
                    log.warning("response queue %s vanished; a new one will be created", self._name)
                    self._renew()
            return 0
        if messages:
            with self._lock:
                self._file([m.body for m in messages])
                self._filed.notify_all()
            self._queues().delete_messages(url, [m.receipt for m in messages])
        return len(messages)

    def _file(self, bodies: list[str]) -> None:
        # Called with the lock held.
        for body in bodies:
            task_id = _task_id_of(body)
            if task_id is None:
                continue
            first = self._notices.get(task_id)
            if first is None:
                self._notices.remember(task_id, body)
                continue
            # A rerun (after a crash) notifies again with the stored, first
            # result; the first notice stands either way.
            self.duplicate_notices += 1
            if first != body:
                self.conflicting_notices += 1

    def close(self) -> None:
        """Delete the queue (at exit); a later task creates a new one."""
        with self._lock:
            url, self._url = self._url, None
            if url is not None and self._pid == os.getpid():
                try:
                    self._queues().delete_queue(url)
                except Exception as exc:  # noqa: BLE001 - at exit, a warning is all we can do
                    log.warning("could not delete response queue %s: %s", self._name, exc)

    def _renew(self) -> None:
        # SQS refuses to re-create a deleted queue's name for 60 s, so take a new
        # name. Notices already sent to the old one are lost; the backend's S3
        # safety check finds those results.
        self._name = f"{self._settings.response_queue_prefix}{uuid.uuid4().hex}"
        self._url = None

    def _ensure_queue(self) -> str:
        now = time.time()
        if (
            self._url is not None
            and now - self._touched < self._settings.response_queue_max_age / 4
        ):
            return self._url
        try:
            if self._url is not None:
                self._queues().tag(self._url, {SEEN_TAG: str(int(now))})
                self._touched = now
                return self._url
        except QueueGone:
            log.warning("response queue %s was reaped; a new one will be created", self._name)
            self._renew()
        first = self._touched == 0.0
        try:
            self._url = self._queues().create(
                self._name,
                attributes=self._attributes(),
                tags={CREATED_TAG: str(int(now)), SEEN_TAG: str(int(now))},
            )
        except Exception as exc:
            raise ResponseQueueError(f"cannot create response queue {self._name}: {exc}") from exc
        self._touched = now
        if first:
            atexit.register(self.close)
        return self._url

    def _attributes(self) -> dict[str, str]:
        retention = min(max(self._settings.response_queue_max_age, 60), 1_209_600)
        return {"MessageRetentionPeriod": str(retention), "VisibilityTimeout": "30"}


def _task_id_of(body: str) -> str | None:
    try:
        task_id = json.loads(body).get("task_id")
    except (ValueError, AttributeError):
        log.warning("ignoring a malformed notice on the response queue: %.80r", body)
        return None
    return task_id if isinstance(task_id, str) else None
