"""What a cloudworker process talks to, wired in one place.

:class:`Services` binds the settings to an :class:`~tasks.objectstore.ObjectStore`
(S3), a :class:`~tasks.queues.QueueService` (SQS) and a
:class:`~tasks.topics.TopicService` (SNS), built lazily so that
importing the app makes no AWS call, and rebuilt after a fork. Unit tests pass
the in-memory stubs instead.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from config import Settings
from tasks import aws
from tasks.codec import ClaimCheck, Codec
from tasks.mailbox import Mailbox
from tasks.objectstore import ObjectStore, S3ObjectStore
from tasks.queues import QueueGone, QueueService, SQSQueueService
from tasks.topics import SNSTopicService, TopicService

__all__ = ["Services"]

T = TypeVar("T")

#: How many reply queue URLs a worker remembers.
_URL_MEMORY = 1024


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
        self._make_store = store or (
            lambda: S3ObjectStore(aws.client("s3", settings), settings.bucket)
        )
        self._make_queues = queues or (lambda: SQSQueueService(aws.client("sqs", settings)))
        self._make_topics = topics or (lambda: SNSTopicService(aws.client("sns", settings)))
        self._lock = threading.Lock()
        self._pid = -1
        self._made: dict[str, Any] = {}  # what the factories made, in this process
        self._urls: OrderedDict[str, str] = OrderedDict()
        self.claims = ClaimCheck(
            self.store,
            inline_max_bytes=settings.inline_max_bytes,
            max_payload_bytes=settings.max_payload_bytes,
        )
        self.codec = Codec(self.claims)
        self._mailbox: Mailbox | None = None

    def _own(self, kind: str, make: Callable[[], T]) -> T:
        """What ``make`` returns, made once per process (clients must not cross a fork)."""
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._made.clear()
                self._urls.clear()
            if kind not in self._made:
                self._made[kind] = make()
            made: T = self._made[kind]
            return made

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
        """This process's response queue (created on first use)."""
        if self._mailbox is None:
            with self._lock:
                if self._mailbox is None:
                    self._mailbox = Mailbox(self.queues, self.settings)
        return self._mailbox

    def send_to_queue(self, name: str, body: str) -> None:
        """Send ``body`` to queue ``name``, resolving and caching its URL."""
        queues = self.queues()
        with self._lock:
            url = self._urls.get(name)
        if url is None:
            url = queues.url_of(name)
            with self._lock:
                self._urls[name] = url
                while len(self._urls) > _URL_MEMORY:
                    self._urls.popitem(last=False)
        try:
            queues.send(url, body)
        except QueueGone:
            with self._lock:
                self._urls.pop(name, None)
            raise
