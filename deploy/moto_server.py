"""``python -m deploy.moto_server``: moto's server, with two of its faults made AWS's behaviour.

moto's ``ReceiveMessage`` on a FIFO queue notes which message groups have a
message in flight when the long poll starts, and does not look again until the
poll ends: a group freed meanwhile (its message deleted) stays blocked for the
rest of the wait. So on moto every message after the first of a group, a
``retry()`` of a FIFO task among them, waited out a whole long poll (20 s) each;
SQS hands it over as soon as the group is free (ministack does too: a FIFO retry
was answered in 1.3 s there, 40 s on moto). Here a long poll of a FIFO queue is
moto's receive without a wait, asked again every :data:`POLL` seconds until a
message comes or the wait ends. Standard queues keep moto's own.

moto's SNS ``Publish`` fails as a whole (``NonExistentQueue``) when one of the
topic's subscriptions names an SQS queue that is gone; SNS delivers to the
others and drops that one. A subscription outlives its queue when its
unsubscribe was refused (the aws-errors tests inject exactly that) until the
reaper removes it: meanwhile every publish to the topic, a revoke broadcast
among them, failed on moto. Here that delivery is dropped, as SNS does.

The local stack runs this in place of ``python -m moto.server``
(:mod:`deploy.endpoints`).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from moto.server import main
from moto.sns.models import Subscription
from moto.sqs.exceptions import QueueDoesNotExist
from moto.sqs.models import SQSBackend

__all__ = ["POLL", "deliver", "receive_message"]

#: Seconds between two looks at a FIFO queue during a long poll.
POLL = 0.05
_moto_receive = SQSBackend.receive_message


def receive_message(  # noqa: PLR0917 - moto's signature
    self: SQSBackend,
    queue_name: str,
    count: int,
    wait_seconds_timeout: int,
    visibility_timeout: int,
    message_attribute_names: list[str] | None = None,
) -> Any:
    """moto's receive; on a FIFO queue, a long poll that sees a message group freed."""
    queue = self.get_queue(queue_name)
    if not queue.fifo_queue or not wait_seconds_timeout:
        return _moto_receive(
            self, queue_name, count, wait_seconds_timeout, visibility_timeout,
            message_attribute_names,
        )  # fmt: skip
    deadline = time.monotonic() + wait_seconds_timeout
    while True:
        found = _moto_receive(
            self, queue_name, count, 0, visibility_timeout, message_attribute_names
        )
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(POLL)


_moto_deliver = Subscription.publish


def deliver(self: Subscription, *args: Any, **kwargs: Any) -> None:
    """moto's delivery of a published message to one subscription; to a queue that is
    gone, dropped (SNS's behaviour), not an error failing the whole publish."""
    try:
        _moto_deliver(self, *args, **kwargs)
    except QueueDoesNotExist:
        return


SQSBackend.receive_message = receive_message  # type: ignore[method-assign]
Subscription.publish = deliver  # type: ignore[method-assign]

if __name__ == "__main__":
    main(sys.argv[1:])
