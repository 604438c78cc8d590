"""Names of the queues that exist only for one receiver, and where control replies go.

Celery's monitoring declares queues that belong to one process and should die
with it: each worker's remote-control queue (``<hostname>.celery.pidbox``), the
reply queue of a process that asks (``<oid>.reply.celery.pidbox``) and the queue
of every event receiver (``celeryev.<uuid>``: Flower, ``celery events``). On
SQS they get names under one prefix, ``<queue prefix>rx-``, so that permissions
can be granted on that prefix alone and the reaper finds the ones a crashed
process left behind.

A worker's own control queue also carries a per-process suffix: SQS refuses,
for 60 seconds, to create a queue with the name of one just deleted, and a
worker restarted by its supervisor would otherwise fail to start. Nobody else
needs that name, since control requests reach it through an SNS topic. A reply
queue's name, in contrast, is derived by the worker from the request's
``reply_to``, so it is the same in every process.

Pure functions of names; nothing here talks to AWS.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass

__all__ = ["MAX_QUEUE_NAME", "ReceiverNames"]

#: SQS's longest queue name.
MAX_QUEUE_NAME = 80

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")  # as kombu's SQS names: "." -> "-", others -> "_"

_incarnation = uuid.uuid4().hex[:8]


def incarnation() -> str:
    """A short token unique to this process (a forked child gets its own)."""
    return _incarnation


def _new_incarnation() -> None:
    global _incarnation
    _incarnation = uuid.uuid4().hex[:8]


os.register_at_fork(after_in_child=_new_incarnation)


@dataclass(frozen=True)
class ReceiverNames:
    """The naming rules, given the prefixes and the control namespace in use."""

    #: Prefix of every receiver queue, e.g. ``cloudworker-rx-``.
    prefix: str
    #: Celery's ``control_exchange`` (``celery``): the pidbox namespace.
    control_namespace: str = "celery"
    #: Celery's ``event_queue_prefix`` (``celeryev``).
    event_queue_prefix: str = "celeryev"

    @property
    def control_exchange(self) -> str:
        """The fanout exchange of control requests (``celery.pidbox``)."""
        return f"{self.control_namespace}.pidbox"

    @property
    def reply_exchange(self) -> str:
        """The exchange control replies are published to (``reply.celery.pidbox``)."""
        return f"reply.{self.control_namespace}.pidbox"

    def queue_name(self, name: str) -> str | None:
        """The SQS name of receiver queue ``name``; ``None`` if it is not one."""
        if name in (self.control_exchange, self.reply_exchange):
            return None
        if name.endswith(f".{self.reply_exchange}"):
            return self._fit(_safe(name[: -len(self.reply_exchange) - 1]) + "-reply")
        if name.endswith(f".{self.control_exchange}"):
            node = name[: -len(self.control_exchange) - 1]
            return self._fit(f"{_safe(node)}-control", suffix=f"-{incarnation()}")
        if name.startswith(f"{self.event_queue_prefix}."):
            return self._fit("events-" + _safe(name[len(self.event_queue_prefix) + 1 :]))
        return None

    def is_event_queue(self, name: str) -> bool:
        """Whether kombu queue ``name`` belongs to an event receiver (Flower, ``celery events``)."""
        return name.startswith(f"{self.event_queue_prefix}.")

    def reply_queue(self, exchange: str, routing_key: str) -> str | None:
        """The queue a control reply published to ``exchange``/``routing_key`` is for.

        kombu's pidbox names a caller's reply queue ``<oid>.<reply exchange>``
        and publishes replies with the caller's oid as the routing key. The
        binding that routes them lives only in the caller's memory, so the
        worker derives the queue instead.
        """
        if exchange != self.reply_exchange or not routing_key:
            return None
        return f"{routing_key}.{exchange}"

    def _fit(self, body: str, *, suffix: str = "") -> str:
        room = MAX_QUEUE_NAME - len(self.prefix) - len(suffix)
        if len(body) > room:
            digest = hashlib.sha256(body.encode()).hexdigest()[:10]
            body = f"{body[: room - 11]}-{digest}"
        return f"{self.prefix}{body}{suffix}"


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text.replace(".", "-"))
