"""Celery's events and remote control over SQS, through SNS fanout.

Stock kombu 5.7 on SQS leaves both dead (see the shared notes): the transport
advertises only direct exchanges, so a worker never starts its remote-control
consumer; events go to a *topic* exchange whose bindings live only in the
memory of the process that declared them, so they are dropped; a control
reply has no binding in the worker either; and a no-ack consumer (every event
receiver) crashes deleting messages in a process without an event loop.

:class:`FanoutChannel` makes them work with kombu's own SNS fanout
(``kombu.transport.SQS.SNS``): a fanout exchange is an SNS topic
(``<prefix><exchange>``), and a queue bound to it is an SQS queue subscribed
to that topic with raw delivery. On top of that it

* declares Celery's events exchange (``celeryev``) as fanout, so that every
  event receiver (Flower, ``celery events``) gets every event, and publishes
  events from a background thread, ten per request
  (:mod:`cloudworker.sqs.event_publisher`), so that a slow SNS never holds up a worker;
* routes a control reply to the asking process's reply queue, whose name it
  derives from the reply's routing key (:mod:`cloudworker.sqs.receiver_names`);
* creates the queues that exist only for one receiver, under their own prefix
  and tagged with when they were created and last used, keeps the reply queue
  of a process for its whole life instead of deleting it after every request
  (SQS refuses a deleted name for 60 seconds), and unsubscribes and deletes
  them all when the channel closes or the process exits; a crashed process's
  queues are left to the reaper (:mod:`cloudworker.worker.reaper`);
* deletes no-ack messages synchronously, in one batch per receive, where there
  is no event loop for kombu's asynchronous client;
* bounds a synchronous receive by the caller's timeout, so that ``celery
  inspect`` waits its one second and not a whole 20-second long poll, except
  for an event receiver, which polls for good and gets whole long polls.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import threading
import weakref
from functools import partial
from typing import Any

from botocore.exceptions import ClientError
from kombu.transport import SQS
from kombu.utils.json import dumps
from vine import promise

from cloudworker.queues import OwnedQueue, SQSQueueService, batches, is_gone, receipt_entries
from cloudworker.sqs.event_publisher import BatchPublisher
from cloudworker.sqs.receiver_names import ReceiverNames

__all__ = ["FanoutChannel"]

log = logging.getLogger(__name__)

#: Seconds a message waits in a receiver queue: events and control requests
#: older than this are of no use, and it bounds what an orphan accumulates.
RECEIVER_RETENTION = 300


class FanoutChannel(SQS.Channel):
    """kombu's SQS channel with working SNS fanout for Celery's monitoring."""

    # -- configuration (transport options) ---------------------------------------------

    @property
    def supports_fanout(self) -> bool:  # type: ignore[override]
        """Fanout through SNS is on unless ``supports_fanout`` is set false."""
        return bool(self.transport_options.get("supports_fanout", True))

    @property
    def receiver_names(self) -> ReceiverNames:
        """The naming rules of receiver queues."""
        names: ReceiverNames | None = self.__dict__.get("_receiver_names")
        if names is None:
            options = self.transport_options
            names = ReceiverNames(
                prefix=options.get("receiver_queue_prefix", f"{self.queue_name_prefix}rx-"),
                control_namespace=options.get("control_namespace", "celery"),
                event_queue_prefix=options.get("event_queue_prefix", "celeryev"),
            )
            self.__dict__["_receiver_names"] = names
        return names

    def _receiver_touch_interval(self) -> float:
        return float(self.transport_options.get("receiver_max_age", 3600)) / 4

    # Typed signatures for two untyped kombu methods this module and the transport
    # call a dozen times; without them each call needs a ``type: ignore``.
    def sqs(self, queue: str | None = None) -> Any:
        return super().sqs(queue=queue)  # type: ignore[no-untyped-call]

    def _new_queue(self, queue: str, **kwargs: Any) -> str:
        url: str = super()._new_queue(queue, **kwargs)  # type: ignore[no-untyped-call]
        return url

    def _queue_service(self) -> SQSQueueService:
        """kombu's own boto3 client, seen through cloudworker's queue interface.

        Receiver queues it creates are encrypted with ``CLOUDWORKER_KMS_KEY``, if set.
        """
        return SQSQueueService(self.sqs(), kms_key=str(self.transport_options.get("kms_key", "")))

    # -- names and routing -------------------------------------------------------------

    # Receiver queues get names under their own prefix (receiver_names.py).
    def canonical_queue_name(self, queue_name: str) -> str:
        name = self.receiver_names.queue_name(queue_name)
        if name is not None:
            return name
        canonical: str = super().canonical_queue_name(queue_name)  # type: ignore[no-untyped-call]
        return canonical

    def is_receiver_queue(self, queue: str) -> bool:
        """Whether ``queue`` (a kombu name) exists only for one receiver."""
        return self.receiver_names.queue_name(queue) is not None

    @property
    def event_exchange(self) -> str:
        """The name of Celery's events exchange."""
        return str(self.transport_options.get("event_exchange", "celeryev"))

    # Celery declares its events exchange as topic: here it is fanout (one SNS topic).
    def exchange_declare(
        self, exchange: str | None = None, type: str = "direct", *args: Any, **kwargs: Any
    ) -> None:
        if exchange == self.event_exchange:
            type = "fanout"  # every receiver gets every event: one SNS topic
        super().exchange_declare(exchange, type, *args, **kwargs)  # type: ignore[no-untyped-call]

    _publisher: BatchPublisher | None = None

    # kombu private: one SNS publish per event; here events go out ten per request.
    def _put_fanout(
        self, exchange: str, message: dict[str, Any], routing_key: str, **kwargs: Any
    ) -> None:
        if exchange != self.event_exchange:
            super()._put_fanout(exchange, message, routing_key, **kwargs)
            return
        if self._publisher is None:
            fanout = self.fanout
            self._publisher = BatchPublisher(fanout.get_client(), fanout._get_or_create_topic)
            _track(self)
        self._publisher.submit(exchange, dumps(message))  # type: ignore[no-untyped-call]

    # kombu private: control replies have no binding in the worker; derive the queue.
    def _lookup(self, exchange: str, routing_key: str, default: Any = None) -> list[str]:
        reply_queue = self.receiver_names.reply_queue(exchange, routing_key)
        if reply_queue is not None:
            return [reply_queue]
        found: list[str] = super()._lookup(exchange, routing_key, default)  # type: ignore[no-untyped-call]
        return found

    # -- receiver queues: created here, deleted at close or exit ----------------------

    _receivers: dict[str, OwnedQueue] | None = None

    # Receiver queues are created tagged, so that the reaper can tell when they died.
    def queue_declare(self, queue: str | None = None, passive: bool = False, **kwargs: Any) -> Any:
        if queue and not passive and self.is_receiver_queue(queue):
            self._create_receiver(queue)
        return super().queue_declare(queue, passive, **kwargs)  # type: ignore[no-untyped-call]

    def _create_receiver(self, queue: str) -> None:
        if self._receivers is None:
            self._receivers = {}
            _track(self)
        if queue in self._receivers:
            return
        name = self.canonical_queue_name(queue)
        receiver = OwnedQueue.create(self._queue_service(), name, retention=RECEIVER_RETENTION)
        self._queue_cache[name] = receiver.url
        self._receivers[queue] = receiver
        log.debug("created receiver queue %s", name)

    def revive_receiver(self, qname: str) -> bool:
        """Create again, and subscribe again, a receiver queue deleted under this process.

        ``qname`` is the SQS name. A live process's queue is deleted when the reaper
        found it idle too long (``reap --max-age 0``, or a process that could not
        reach SQS for that long); its receiver would otherwise fail for ever.
        Returns whether ``qname`` was one of this channel's receiver queues; a
        failure (SQS refuses a just-deleted name for 60 s) is logged and left to
        the next receive.
        """
        receivers = self._receivers or {}
        queue = next((q for q in receivers if self.canonical_queue_name(q) == qname), None)
        if queue is None:
            return False
        try:
            exchange = self._get_exchange_for_queue(queue)
        except Exception:  # noqa: BLE001 - not bound to any exchange
            exchange = ""
        fanout = bool(exchange) and self._exchange_is_fanout(exchange)
        if fanout:
            with contextlib.suppress(Exception):  # stale: gone with the queue, or reaped
                self._unsubscribe(queue, exchange)
        self._queue_cache.pop(qname, None)
        old = receivers.pop(queue)
        try:
            self._create_receiver(queue)
            if fanout:
                self.fanout.subscriptions.subscribe_queue(queue_name=queue, exchange_name=exchange)
        except Exception as exc:  # noqa: BLE001 - tried again at the next receive
            receivers.setdefault(queue, old)
            log.warning("could not create receiver queue %s again: %s", qname, exc)
        else:
            log.warning("receiver queue %s had been deleted; created it again", qname)
        return True

    def _unsubscribe(self, queue: str, exchange: str) -> None:
        """kombu's ``unsubscribe_queue`` without its ERROR log: the callers here expect a
        refusal (a subscription gone with its queue, an endpoint fault) and say what
        they do about it themselves."""
        subscriptions = self.fanout.subscriptions
        arn = subscriptions._subscription_arn_cache.pop(f"{exchange}:{queue}", None)
        if arn:
            subscriptions._unsubscribe_sns_subscription(arn)

    # kombu deletes the reply queue after each request; SQS then refuses its name for 60 s.
    def after_reply_message_received(self, queue: str) -> None:
        """Keep the reply queue for the next request (kombu deletes it after each)."""

    def drop_receivers(self) -> None:
        """Unsubscribe and delete every receiver queue this channel created."""
        receivers, self._receivers = self._receivers or {}, {}
        for queue, receiver in receivers.items():
            try:
                exchange = self._get_exchange_for_queue(queue)
            except Exception:  # noqa: BLE001 - not bound to any exchange
                exchange = None
            try:
                if exchange is not None and self._exchange_is_fanout(exchange):
                    self._unsubscribe(queue, exchange)
                self.sqs().delete_queue(QueueUrl=receiver.url)
            except Exception as exc:  # noqa: BLE001 - the reaper deletes it later
                log.warning("could not delete receiver queue %s: %s", receiver.url, exc)
                continue
            self._queue_cache.pop(self.canonical_queue_name(queue), None)
            log.debug("deleted receiver queue %s", receiver.url)

    def close(self) -> None:
        if not self.closed:
            self.drop_receivers()
            if self._publisher is not None:
                self._publisher.close()
        super().close()  # type: ignore[no-untyped-call]

    def _touch(self, queue: str) -> None:
        """Tag a receiver queue as in use, now and then, so the reaper leaves it alone."""
        receiver = (self._receivers or {}).get(queue)
        if receiver is None:
            return
        try:
            receiver.touch(self._queue_service(), every=self._receiver_touch_interval())
        except Exception as exc:  # noqa: BLE001 - tried again at the next interval
            log.warning("could not mark receiver queue %s as in use: %s", receiver.url, exc)

    # kombu private: each async receive; here it also keeps the receiver queue tagged.
    def _loop1(self, queue: str, messages_fetched: Any = None) -> None:
        self._touch(queue)
        super()._loop1(queue, messages_fetched)  # type: ignore[no-untyped-call]

    # -- synchronous receivers (no event loop) ------------------------------------------

    _drain_timeout: float | None = None
    _noack_receipts: list[str] | None = None
    #: Inside a synchronous drain: deletes are synchronous too, even when an event
    #: loop exists in the process (a worker's, run by another thread, as in Celery's
    #: test suite): its curl client must not be driven from two threads.
    _draining = False

    # Remembers the caller's timeout, which bounds a synchronous receive below.
    def drain_events(
        self, timeout: float | None = None, callback: Any = None, **kwargs: Any
    ) -> Any:
        self._drain_timeout = timeout
        self._draining = True
        try:
            return super().drain_events(timeout=timeout, callback=callback, **kwargs)  # type: ignore[no-untyped-call]
        finally:
            self._draining = False

    # kombu private: each synchronous receive; here it also keeps the queue tagged.
    def _get_bulk(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        self._touch(queue)
        return super()._get_bulk(queue, *args, **kwargs)  # type: ignore[no-untyped-call]

    # kombu private: a 20 s long poll would outlast `celery inspect`'s one-second wait.
    def _receive_message(
        self, queue: str, max_number_of_messages: int = 1, wait_time_seconds: int | None = None
    ) -> Any:
        wait = self.wait_time_seconds if wait_time_seconds is None else wait_time_seconds
        if self._drain_timeout is not None and not self.receiver_names.is_event_queue(queue):
            # A caller waiting for replies waits only its own timeout. An event
            # receiver drains with a 1 s "safety interval" only to check whether to
            # stop: it gets whole long polls, a twentieth of the requests.
            wait = max(0, min(wait, math.ceil(self._drain_timeout)))
        params: dict[str, Any] = {
            "QueueUrl": self._new_queue(queue),
            "MaxNumberOfMessages": max_number_of_messages,
            "WaitTimeSeconds": wait,
        }
        attributes = self.get_message_attributes
        for key in ("MessageSystemAttributeNames", "MessageAttributeNames"):
            if attributes.get(key):
                params[key] = attributes[key]
        try:
            return self.sqs(queue=queue).receive_message(**params)
        except ClientError as exc:
            if not is_gone(exc) or not self.revive_receiver(self.canonical_queue_name(queue)):
                raise
            return {}  # no messages this time; the next receive uses the new queue

    # kombu private: no-ack deletes need an event loop; here one sync batch per receive.
    def _messages_to_python(self, messages: list[dict[str, Any]], queue: str) -> list[Any]:
        if (self.hub is not None and not self._draining) or queue not in self._noack_queues:
            return super()._messages_to_python(messages, queue)  # type: ignore[no-any-return, no-untyped-call]
        self._noack_receipts = []
        try:
            payloads: list[Any] = super()._messages_to_python(messages, queue)  # type: ignore[no-untyped-call]
        finally:
            receipts, self._noack_receipts = self._noack_receipts, None
        try:
            url = self._new_queue(queue)
            for batch in batches(receipts):
                self.sqs(queue=queue).delete_message_batch(
                    QueueUrl=url, Entries=receipt_entries(batch)
                )
        except Exception as exc:  # noqa: BLE001 - delivered again at worst
            _delete_failed(queue, len(receipts), exc)
        return payloads

    # kombu private: see _messages_to_python. kombu deletes a no-ack message (a control
    # request, an event) through its asynchronous client with no error handler, so a
    # failed delete (the queue deleted under the receiver, a receipt gone stale) was
    # raised into the event loop and ended the worker. Here it is a warning: such a
    # message comes back after its visibility timeout at worst.
    def _delete_message(self, queue_name: str, message: dict[str, Any]) -> None:
        receipt = message["ReceiptHandle"]
        if self._noack_receipts is not None:
            self._noack_receipts.append(receipt)
            return
        try:
            url = self._new_queue(queue_name)
            if self.hub is None or self._draining:
                self.sqs(queue=queue_name).delete_message(QueueUrl=url, ReceiptHandle=receipt)
                return
            failed = promise(on_error=partial(_delete_failed, queue_name, 1))
            self.asynsqs(queue=queue_name).delete_message(url, receipt, callback=failed)  # type: ignore[no-untyped-call]
        except Exception as exc:  # noqa: BLE001 - delivered again at worst
            _delete_failed(queue_name, 1, exc)


def _delete_failed(queue: str, count: int, exc: BaseException) -> None:
    log.warning("could not delete %d no-ack message(s) from %s: %s", count, queue, exc)


# -- deleting receiver queues at exit, and not in a forked child ---------------------------

_channels: weakref.WeakSet[FanoutChannel] = weakref.WeakSet()
_lock = threading.Lock()


def _track(channel: FanoutChannel) -> None:
    with _lock:
        _channels.add(channel)


def _drop_all() -> None:
    for channel in list(_channels):
        channel.drop_receivers()


def _forget_parents_channels() -> None:
    """In a forked child (a pool process): the receiver queues and the publisher's
    thread are the parent's, so the child must neither delete nor use them."""
    global _lock
    _lock = threading.Lock()
    for channel in list(_channels):
        channel._receivers = None
        channel._publisher = None
    _channels.clear()


atexit.register(_drop_all)
os.register_at_fork(after_in_child=_forget_parents_channels)
