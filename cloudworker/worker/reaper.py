"""Deleting the queues of processes that died without deleting their own.

SQS has no auto-delete, so a crashed process's queue would live for ever. Two
kinds of queue belong to one process: a client's response queue
(:mod:`cloudworker.results.mailbox`) and a monitoring receiver's queue (Flower, ``celery
events``, a worker's control queue, a control reply queue: :mod:`cloudworker.sqs.fanout`).
Both are tagged with their creation time and last use, refreshed while their
process lives; one unused for longer than ``response_queue_max_age`` seconds is
deleted by ``python -m client reap`` and by every worker (at start, then every
quarter of that age: the :class:`Reaper` worker bootstep, which starts and
stops with the worker). A receiver queue is subscribed to an SNS topic, so its
subscription is removed too. A live client that finds its queue reaped creates
it again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from celery import bootsteps

from cloudworker.queues import CREATED_TAG, SEEN_TAG, QueueGone, QueueService, name_of
from cloudworker.settings import Settings
from cloudworker.topics import TopicService

__all__ = ["Reaper", "reap"]

log = logging.getLogger(__name__)


def reap(
    queues: QueueService,
    settings: Settings,
    *,
    topics: TopicService | None = None,
    max_age: float | None = None,
    now: float | None = None,
) -> list[str]:
    """Delete queues idle for more than ``max_age`` seconds; return their names.

    With ``topics``, also remove the SNS subscriptions of receiver queues that
    no longer exist (the ones reaped now and any left by earlier deletions).
    """
    max_age = settings.response_queue_max_age if max_age is None else max_age
    cutoff = (time.time() if now is None else now) - max_age
    reaped: list[str] = []
    listed: set[str] = set()
    for prefix in (settings.response_queue_prefix, settings.receiver_queue_prefix):
        for url in queues.list_urls(prefix):
            listed.add(name_of(url))
            try:
                tags = queues.tags(url)
            except QueueGone:
                continue
            last_used = max(_epoch(tags.get(SEEN_TAG)), _epoch(tags.get(CREATED_TAG)))
            if last_used == 0:
                log.debug("leaving untagged queue %s alone", name_of(url))
                continue
            if last_used < cutoff:
                queues.delete_queue(url)
                reaped.append(name_of(url))
    if topics is not None:
        _unsubscribe_missing(queues, topics, settings, listed - set(reaped))
    return reaped


def _unsubscribe_missing(
    queues: QueueService, topics: TopicService, settings: Settings, alive: set[str]
) -> None:
    """Unsubscribe receiver queues that do not exist.

    ``alive`` holds the queues the listing showed and the reaper kept: no request
    for those. Any other is looked up once, since a receiver may have created its
    queue (and subscribed it) after the listing.
    """
    for subscription in topics.queue_subscriptions(settings.queue_prefix):
        name = subscription.queue_name
        if not name.startswith(settings.receiver_queue_prefix) or name in alive:
            continue
        try:
            queues.url_of(name)
            continue
        except QueueGone:
            pass
        topics.unsubscribe(subscription.arn)
        log.info("removed the subscription of deleted queue %s", name)


def _epoch(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


class Reaper(bootsteps.StartStopStep):  # type: ignore[misc]
    """A worker bootstep: :func:`reap` at start, then every quarter of the max age.

    It runs in a thread of its own (each pass is a few blocking SQS and SNS
    requests, which must not stall the worker's event loop) that stops with the
    worker. It starts once the pool has forked its processes: its first pass makes
    boto3 clients, and a process forked while another thread is inside an import
    or a lock of botocore inherits that lock held by no one, and hangs on it at its
    first client (seen once: a pool process that never ran its first task).
    """

    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._services = parent.app.services
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        self._stopped.clear()
        self._thread = threading.Thread(target=self._run, name="cloudworker-reaper", daemon=True)
        self._thread.start()

    def stop(self, parent: Any) -> None:
        self._stopped.set()

    def _run(self) -> None:
        services = self._services
        interval = max(60.0, services.settings.response_queue_max_age / 4)
        while not self._stopped.is_set():
            try:
                reaped = reap(services.queues(), services.settings, topics=services.topics())
                if reaped:
                    log.info("reaped %d abandoned queue(s): %s", len(reaped), ", ".join(reaped))
            except (ClientError, BotoCoreError) as exc:  # tried again at the next interval
                log.warning("reaping abandoned queues failed: %s", exc)
            except Exception:
                log.exception("reaping abandoned queues failed")
            self._stopped.wait(interval)
