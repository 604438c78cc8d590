"""Celery's message priorities on SQS: a queue's lanes.

SQS has no priorities. A queue declared with a highest priority (Celery's
``task_queue_max_priority``, which declares every queue with ``x-max-priority`` as
on RabbitMQ, or a ``Queue`` of one's own with that argument) gets lanes: a task of
priority 3 to 5 goes to ``<queue>-p3``, 6 to 8 to ``<queue>-p6``, 9 and above to
``<queue>-p9``, below 3 to the queue itself; a larger number is a higher priority,
as on RabbitMQ. Lanes are queues like any other, created on first use.

A worker consuming the queue consumes its lanes too, each with a receive loop of
its own: a task of high priority waits behind the work the worker already holds
(its prefetch window), never behind the queue's backlog, and no lane starves, since
every lane is received from as soon as the worker has room. The cost is a long
poll per lane when idle. A FIFO queue has no lanes (its order is the point of it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["STEPS", "PriorityLanes"]

#: The lowest priority of each lane.
STEPS = (3, 6, 9)
#: What a lane's name adds to its queue's, before its step.
_LANE = "-p"


class PriorityLanes:
    """Which queues have lanes, and which lane a priority goes to (a channel holds one)."""

    def __init__(self) -> None:
        self._highest: dict[str, int] = {}

    def declare(self, queue: str, arguments: Mapping[str, Any] | None) -> None:
        """Note a queue's ``x-max-priority``, given when it is declared."""
        highest = (arguments or {}).get("x-max-priority")
        if not isinstance(highest, int) or isinstance(highest, bool) or highest <= 0:
            return
        if not queue.endswith(".fifo") and not is_lane(queue):
            self._highest[queue] = highest

    def lane_of(self, queue: str, priority: Any) -> str:
        """The queue (or lane) a message of ``priority`` sent to ``queue`` goes to."""
        highest = self._highest.get(queue)
        if highest is None or not isinstance(priority, int) or isinstance(priority, bool):
            return queue
        steps = [step for step in STEPS if step <= min(priority, highest)]
        return f"{queue}{_LANE}{steps[-1]}" if steps else queue

    def lanes(self, queue: str) -> list[str]:
        """The lanes of ``queue``, highest first (none if it was declared without)."""
        highest = self._highest.get(queue)
        if highest is None:
            return []
        return [f"{queue}{_LANE}{step}" for step in reversed(STEPS) if step <= highest]


def is_lane(queue: str) -> bool:
    """Whether ``queue`` is a lane of another queue."""
    head, _, step = queue.rpartition(_LANE)
    return bool(head) and step.isdigit() and int(step) in STEPS
