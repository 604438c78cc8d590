"""What a cloudworker process talks to, wired in one place.

:class:`Services` binds the settings to an :class:`~cloudworker.objectstore.ObjectStore`
(S3), a :class:`~cloudworker.queues.QueueService` (SQS) and a
:class:`~cloudworker.topics.TopicService` (SNS), and to what is built on them: the
claim-check codec, this process's response queue (:class:`~cloudworker.results.mailbox.Mailbox`)
and the worker's :class:`~cloudworker.results.mailbox.Notifier`. They are built lazily, so
that importing the app makes no AWS call. Unit tests pass the in-memory stubs.

Everything here is per process: boto3 clients must not cross a ``fork()``
(Celery's prefork pool forks the worker after the app is made), and a child
that kept its parent's response queue would steal its notices. One after-fork
hook (:func:`os.register_at_fork`) drops it all in the child, which builds its
own on first use. The clients sign with the credentials kombu's transport was
given (:class:`~cloudworker.aws.Credentials`), read from the app's configuration when
the first client is made, so settings a user puts in ``app.conf`` after
:func:`~cloudworker.application.create_app` count. Celery makes one result backend per thread
(``celery/app/base.py``), so the mailbox lives here, shared by the threads of
a process, not on the backend.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from cloudworker import aws
from cloudworker.codec import ClaimCheck, Codec
from cloudworker.keys import state_key
from cloudworker.objectstore import ObjectStore, S3ObjectStore
from cloudworker.queues import QueueService, SQSQueueService
from cloudworker.results.finishing import ResultFinisher
from cloudworker.results.mailbox import Mailbox, Notifier
from cloudworker.results.progress import StateWriter
from cloudworker.settings import Settings
from cloudworker.topics import SNSTopicService, TopicService

__all__ = ["Services"]

T = TypeVar("T")


class Services:
    """Settings plus the object store, the queue service and what is built on them."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Callable[[], ObjectStore] | None = None,
        queues: Callable[[], QueueService] | None = None,
        topics: Callable[[], TopicService] | None = None,
    ) -> None:
        self.settings = settings
        #: Where the credentials of this process's clients come from (the app's broker
        #: settings, once :func:`~cloudworker.application.create_app` bound them).
        self.credentials: Callable[[], aws.Credentials] = aws.Credentials
        self._make_store = store or (
            lambda: S3ObjectStore(
                self.client("s3"),
                settings.bucket,
                prefix=settings.s3_prefix,
                kms_key=settings.kms_key,
            )
        )
        self._make_queues = queues or (
            lambda: SQSQueueService(self.client("sqs"), kms_key=settings.kms_key)
        )
        self._make_topics = topics or (lambda: SNSTopicService(self.client("sns")))
        self._lock = threading.Lock()
        self._made: dict[str, Any] = {}  # what the factories made, in this process
        self.claims = ClaimCheck(
            self.store,
            inline_max_bytes=settings.inline_max_bytes,
            max_payload_bytes=settings.max_payload_bytes,
        )
        self.codec = Codec(self.claims)
        _after_fork(self._forget)

    def _forget(self) -> None:
        """In a forked child: drop what the parent made (its queue stays the parent's)."""
        mailbox = self._made.get("mailbox")
        if isinstance(mailbox, Mailbox):
            mailbox.disown()
        self._made = {}
        self._lock = threading.Lock()

    def _own(self, kind: str, make: Callable[[], T]) -> T:
        """What ``make`` returns, made once in this process."""
        with self._lock:
            if kind not in self._made:
                self._made[kind] = make()
            made: T = self._made[kind]
            return made

    def client(self, service: str) -> Any:
        """A boto3 client for ``service``, signing with this app's credentials."""
        return aws.client(service, self.settings, self.credentials())

    def store(self) -> ObjectStore:
        """The object store (S3 bucket) of this process."""
        return self._own("store", self._make_store)

    def queues(self) -> QueueService:
        """The queue service (SQS) of this process."""
        return self._own("queues", self._make_queues)

    def topics(self) -> TopicService:
        """The topic service (SNS) of this process."""
        return self._own("topics", self._make_topics)

    @property
    def mailbox(self) -> Mailbox:
        """This process's response queue (created on its first task)."""
        return self._own("mailbox", lambda: Mailbox(self.queues, self.settings))

    @property
    def notifier(self) -> Notifier:
        """Sends this worker's notices to the callers' response queues."""
        return self._own("notifier", lambda: Notifier(self.queues, self.settings))

    @property
    def finisher(self) -> ResultFinisher:
        """Stores this process's successful results in the background (``results.finishing``)."""
        return self._own("finisher", lambda: ResultFinisher(self.queues))

    @property
    def states(self) -> StateWriter:
        """Writes the states of the tasks this process runs, throttled (``results.progress``)."""
        return self._own(
            "states", lambda: StateWriter(self.write_state, self.settings.state_interval)
        )

    def write_state(self, task_id: str, reply_to: str | None, state: str, record: str) -> None:
        """Keep a task's latest state that is not final in S3, and push it to its caller."""
        self.store().put(state_key(task_id), record.encode("utf-8"))
        self.notifier.send(reply_to, task_id, state, record)


def _after_fork(method: Callable[[], None]) -> None:
    """Call bound ``method`` in every child forked from now on, while its object lives."""
    ref = weakref.WeakMethod(method)

    def call() -> None:
        alive = ref()
        if alive is not None:
            alive()

    os.register_at_fork(after_in_child=call)
