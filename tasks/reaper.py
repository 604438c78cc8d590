"""Deleting the response queues of clients that died without deleting their own.

SQS has no auto-delete, so a crashed client's queue would live for ever. Every
response queue is tagged with its creation time and last use
(:mod:`tasks.mailbox`); a queue unused for longer than
``response_queue_max_age`` seconds is deleted by ``python -m client reap`` and
when a worker starts. A live client that finds its queue reaped creates it again.
"""

from __future__ import annotations

import logging
import time

from config import Settings
from tasks.mailbox import CREATED_TAG, SEEN_TAG
from tasks.queues import QueueGone, QueueService, name_of

__all__ = ["reap"]

log = logging.getLogger(__name__)


def reap(
    queues: QueueService,
    settings: Settings,
    *,
    max_age: float | None = None,
    now: float | None = None,
) -> list[str]:
    """Delete response queues idle for more than ``max_age`` seconds; return their names."""
    max_age = settings.response_queue_max_age if max_age is None else max_age
    cutoff = (time.time() if now is None else now) - max_age
    reaped: list[str] = []
    for url in queues.list_urls(settings.response_queue_prefix):
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
    return reaped


def _epoch(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
