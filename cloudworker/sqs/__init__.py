"""cloudworker's kombu transport: kombu's SQS transport with our defaults.

Selected by configuration (``broker_transport = "cloudworker.sqs:Transport"``),
not by patching kombu. What it changes:

* Messages travel as plain JSON. kombu's SQS transport base64-encodes every
  message twice by default (the body, then the whole envelope: about x1.78);
  JSON needs neither layer, so an inline payload can be almost twice as large.
  The receive path still reads base64 messages from other producers.
* A queue the app routes to or consumes that does not exist is created on first
  use, as kombu does, but with its dead-letter queue and redrive policy (and
  encrypted with ``CLOUDWORKER_KMS_KEY``), as provisioning makes them.
  ``CLOUDWORKER_CREATE_QUEUES=false`` (least-privilege deployments, no
  ``sqs:CreateQueue``) makes a missing queue a clear :class:`QueueNotProvisioned` error.
* Inside ``with cloudworker.sqs.batch_sends.batch_sends():`` messages are collected and sent
  with ``SendMessageBatch``, ten per request (see :mod:`cloudworker.sqs.batch_sends`).
* A worker survives its endpoint failing. kombu 5.7's asynchronous receive turns
  a 5xx answer, a timeout or a broken connection into an empty *list*, on which
  the channel crashes (``'list' object has no attribute 'get'``) and the worker
  exits. Here such a receive counts as a failure: it is logged and retried after
  an exponential backoff with full jitter (up to 0.5 s, doubling to 30 s; Celery's
  ``get_exponential_backoff_interval``), and the first
  success resets it. Every asynchronous request also gets a connect and a total
  timeout (kombu's pycurl client sets none, so a hung connection would stall a
  queue for ever), longer than the long poll it carries.
* ``countdown``/``eta`` use SQS's own ``DelaySeconds``: a task due later is
  published delayed (up to SQS's 15 minutes), and a worker that receives one
  still due more than a second later sends it back delayed again, instead of
  holding the message unacknowledged in memory, where SQS would deliver it
  again every visibility timeout.
* In a worker, acknowledgements are deleted in batches (``DeleteMessageBatch``,
  up to ten, at most half a second after the first): a tenth of the requests.
  A worker that dies inside that half second leaves those messages to be
  delivered again; a task's first stored result wins, so the caller still gets
  one answer.
* A message the worker rejects (undecodable, an unknown task, a content type
  other than JSON such as pickle, which is never deserialized, a broken header:
  see :mod:`cloudworker.worker.admission`) is moved to the queue's dead-letter queue at once,
  tagged with where it came from and why, instead of being received again until
  SQS gives up on it.
* Each received message is handled on its own: one that is not a kombu
  envelope of the right types, or nests deeper than :data:`cloudworker.codec.MAX_DEPTH`,
  or makes any step of its delivery fail, is dead-lettered alone, and the other
  messages of its batch are delivered as usual (kombu's loop would abandon the
  rest of the batch, leaving them invisible until their visibility timeout).
* Fanout exchanges work, through SNS, so that Celery's events and remote
  control do (:mod:`cloudworker.sqs.fanout`); the transport says so in ``implements``,
  which is what makes a worker start its remote-control consumer.
* Purging (``app.control.purge()``, ``celery purge``) always works. SQS allows one
  ``PurgeQueue`` per queue per 60 s and refuses the next with
  ``PurgeQueueInProgress``, whichever process sent the first; then the queue is
  drained instead: ``ReceiveMessage`` of ten and ``DeleteMessageBatch`` until a
  receive finds it empty, and the count is the messages deleted. Unlike
  ``PurgeQueue``, a drain leaves the messages workers hold and the delayed ones
  (a ``countdown``) alone, and takes those sent while it runs. The count after a
  ``PurgeQueue`` is the queue's visible messages just before it (kombu's counts
  them ten times over).
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from queue import Empty
from typing import Any

import pycurl
from botocore.exceptions import BotoCoreError, ClientError
from celery.utils.time import get_exponential_backoff_interval
from kombu.asynchronous.http.curl import CurlClient
from kombu.transport import SQS, virtual
from kombu.transport.SQS.exceptions import DoesNotExistQueueException
from vine import promise, transform

from cloudworker.application import ADOPTED_OPTION
from cloudworker.codec import check_depth
from cloudworker.errors import InvalidMessage, LimitExceeded, QueueNotProvisioned
from cloudworker.queues import (
    BATCH,
    DELETED_ELSEWHERE,
    GONE_CODES,
    REASON_ATTRIBUTE,
    REASON_KEY,
    SOURCE_ATTRIBUTE,
    batches,
    create_task_queue,
    is_gone,
    is_purge_in_progress,
    name_of,
    receipt_entries,
)
from cloudworker.sqs.batch_sends import BatchingClient, current_batch
from cloudworker.sqs.fanout import FanoutChannel
from cloudworker.sqs.priority_lanes import PriorityLanes
from cloudworker.sqs.scheduled import scheduled_id

__all__ = ["Channel", "QueueNotProvisioned", "Transport"]


log = logging.getLogger(__name__)

#: Longest pause (ms) after the first failed receive; it doubles with each failure
#: in a row, up to the second; the pause is drawn below it (full jitter).
_BACKOFF_FIRST_MS = 500
_BACKOFF_MAX_MS = 30_000
#: Seconds to set up a connection to the endpoint.
_CONNECT_TIMEOUT = 5
#: Seconds a request may take beyond the long poll it carries.
_REQUEST_MARGIN = 15
#: The longest delay SQS gives a message.
MAX_DELAY_SECONDS = 900
#: Between a consumer's tag and a lane's name, in the tag of the lane's consumer.
_LANE_TAG = "|lane|"
#: The longest SQS hides a received message.
MAX_VISIBILITY_SECONDS = 43_200
#: The header that carries a message's group (``MessageGroupId``: a FIFO queue's, or a
#: fair queue's tenant) with its task, so that every re-send of the task keeps it.
GROUP_HEADER = "MessageGroupId"
#: A task due within this many seconds is handed to the worker rather than delayed again.
_DUE_SLACK = 1.0
#: Longest wait before acknowledged messages are deleted.
_ACK_DELAY = 0.5
#: Long poll (s) of each receive of a drain: only a long poll answers "empty" for sure.
_DRAIN_WAIT = 1


class Channel(FanoutChannel):
    """kombu's SQS channel, with plain JSON bodies and no implicit queue creation."""

    #: No base64 layer on message bodies (kombu's virtual transport default is base64).
    body_encoding: str | None = None  # type: ignore[assignment]

    _priority_lanes: PriorityLanes | None = None

    @property
    def priority_lanes(self) -> PriorityLanes:
        """The queues of this channel declared with priorities (sqs/priority_lanes.py)."""
        if self._priority_lanes is None:
            self._priority_lanes = PriorityLanes()
        return self._priority_lanes

    def queue_declare(self, queue: str | None = None, passive: bool = False, **kwargs: Any) -> Any:
        if queue:
            self.priority_lanes.declare(queue, kwargs.get("arguments"))
        return super().queue_declare(queue, passive, **kwargs)

    def basic_consume(
        self, queue: str, no_ack: bool, callback: Any, consumer_tag: str, *args: Any, **kwargs: Any
    ) -> Any:
        """kombu's, and the same for each of the queue's priority lanes, highest first."""
        for lane in self.priority_lanes.lanes(queue):
            tag = f"{consumer_tag}{_LANE_TAG}{lane}"
            super().basic_consume(lane, no_ack, callback, tag)  # type: ignore[no-untyped-call]
        return super().basic_consume(  # type: ignore[no-untyped-call]
            queue, no_ack, callback, consumer_tag, *args, **kwargs
        )

    def basic_cancel(self, consumer_tag: str) -> Any:
        for tag in [t for t in self._consumers if t.startswith(f"{consumer_tag}{_LANE_TAG}")]:
            super().basic_cancel(tag)  # type: ignore[no-untyped-call]
        return super().basic_cancel(consumer_tag)  # type: ignore[no-untyped-call]

    @property
    def sqs_base64_encoding(self) -> bool:
        """No base64 layer on the SQS message body either, unless configured."""
        return bool(self.transport_options.get("sqs_base64_encoding", False))

    # kombu private: it creates a missing queue bare; here it gets its dead-letter queue.
    def _new_queue(self, queue: str, **kwargs: Any) -> str:
        try:
            url: str = self._resolve_queue_url(queue)  # type: ignore[no-untyped-call]
        except DoesNotExistQueueException:
            name = self.canonical_queue_name(queue)
            if self.is_receiver_queue(queue):  # fanout.py makes those, and says so
                raise QueueNotProvisioned(f"SQS queue {name!r} does not exist") from None
            if not self.transport_options.get("create_queues", True):
                raise QueueNotProvisioned(
                    f"SQS queue {name!r} does not exist and CLOUDWORKER_CREATE_QUEUES is off: "
                    "provision it (`python -m deploy provision` with CLOUDWORKER_TASK_QUEUE "
                    "set to it, or the AWS stack)"
                ) from None
            url = create_task_queue(
                self.sqs(queue=queue),
                name,
                visibility_timeout=int(self.visibility_timeout),
                wait_seconds=int(self.wait_time_seconds),
                kms_key=str(self.transport_options.get("kms_key") or ""),
            )
            log.info("created task queue %s with its dead-letter queue", name)
            self._queue_cache[name] = url
        return url

    # kombu private: lists the prefix's queues when a channel opens, only to cache their URLs.
    def _update_queue_cache(self, queue_name_prefix: str) -> None:
        try:
            super()._update_queue_cache(queue_name_prefix)  # type: ignore[no-untyped-call]
        except (ClientError, BotoCoreError) as exc:  # each queue is looked up when used
            log.warning("could not list the queues under %s: %s", queue_name_prefix, exc)

    # kombu's boto3 client, collected into SendMessageBatch inside batch_sends().
    def sqs(self, queue: str | None = None) -> Any:
        client = super().sqs(queue=queue)
        batch = current_batch()
        return client if batch is None else BatchingClient(client, batch)

    # -- rejected messages go to the dead-letter queue ---------------------------------

    _dead_letter_urls: dict[str, str | None] | None = None

    # kombu private: it deletes a rejected message; here it goes to the dead-letter queue.
    def _delete_rejected_message(self, delivery_tag: Any) -> None:
        try:
            info = self.qos.get(delivery_tag).delivery_info
            url, message = info["sqs_queue"], info["sqs_message"]
        except (KeyError, TypeError):
            return
        self._dead_letter(url, message, str(info.get(REASON_KEY) or "rejected"))

    def _dead_letter(self, url: str, message: dict[str, Any], reason: str) -> None:
        """Move received ``message`` from ``url`` to its dead-letter queue, with ``reason``."""
        client = self.sqs()
        source = url.rstrip("/").rsplit("/", 1)[-1]
        try:
            dead_letters = self._dead_letter_url(url)
            if dead_letters is not None:  # without one, the message is deleted, as kombu does
                fifo = (
                    {
                        "MessageGroupId": _group_of(_headers_of(self, message)).get(
                            "MessageGroupId", "default"
                        ),
                        "MessageDeduplicationId": str(message.get("MessageId") or uuid.uuid4()),
                    }
                    if dead_letters.endswith(".fifo")
                    else _group_of(_headers_of(self, message))
                )
                client.send_message(
                    QueueUrl=dead_letters,
                    MessageBody=message["Body"],
                    MessageAttributes={
                        SOURCE_ATTRIBUTE: {"DataType": "String", "StringValue": source},
                        REASON_ATTRIBUTE: {"DataType": "String", "StringValue": reason[:1000]},
                    },
                    **fifo,
                )
            client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        except Exception as exc:  # noqa: BLE001 - SQS's redrive policy still dead-letters it
            log.warning("could not move a rejected message from %s: %s", source, exc)
            return
        # Whoever refused it has said why, in one warning line.
        log.info("moved a rejected message from %s to the dead-letter queue: %s", source, reason)

    def _dead_letter_url(self, url: str) -> str | None:
        """The URL of the dead-letter queue of queue ``url`` (from its redrive policy)."""
        if self._dead_letter_urls is None:
            self._dead_letter_urls = {}
        if url not in self._dead_letter_urls:
            attributes = self.sqs().get_queue_attributes(
                QueueUrl=url, AttributeNames=["RedrivePolicy"]
            )["Attributes"]
            policy = attributes.get("RedrivePolicy")
            target = json.loads(policy)["deadLetterTargetArn"] if policy else None
            self._dead_letter_urls[url] = (
                f"{url.rstrip('/').rsplit('/', 1)[0]}/{target.rsplit(':', 1)[-1]}"
                if target
                else None
            )
        return self._dead_letter_urls[url]

    # -- every received message on its own ----------------------------------------------

    # kombu private: parses the envelope; here with a bound on its depth.
    def _prepare_json_payload(self, text: str) -> Any:
        # kombu parses the envelope with no bound on its depth (a RecursionError
        # would fail the whole batch) and turns what is not JSON into a raw body.
        try:
            check_depth(text)
        except LimitExceeded as exc:
            raise InvalidMessage(f"the message {exc}") from None
        try:
            return super()._prepare_json_payload(text)  # type: ignore[no-untyped-call]
        except ValueError as exc:  # e.g. a number past the int/str conversion limit
            raise InvalidMessage(f"the message is not JSON that can be read: {exc}") from None

    # kombu private: wraps the envelope; here only one kombu and Celery can take.
    def _envelope_payload(self, payload: Any, raw_text: str, message: Any, q_url: str) -> Any:
        problem = _envelope_problem(payload)
        if problem is not None:
            raise InvalidMessage(problem)
        payload = super()._envelope_payload(payload, raw_text, message, q_url)  # type: ignore[no-untyped-call]
        scheduled_id(payload, message.get("MessageId"))  # one id per schedule firing
        # What AMQP calls redelivered, and Celery hands tasks as
        # request.delivery_info["redelivered"]: SQS has handed this message out
        # before (kombu fetches ApproximateReceiveCount and leaves the flag unset).
        payload["properties"]["delivery_info"]["redelivered"] = _receive_count(message) > 1
        return payload

    def _deliver_each(self, queue: str, qname: str, messages: list[dict[str, Any]]) -> None:
        """Deliver each message alone; one that fails is dead-lettered, not its batch."""
        callback = self.connection._callbacks[qname]
        for message in messages:
            try:
                if self._sent_back_delayed(queue, qname, message):
                    continue
            except Exception as exc:  # noqa: BLE001 - the message is fine; SQS could not take it
                log.warning("could not delay a task due later again, in %s: %s", qname, exc)
                continue  # it comes back after its visibility timeout, and is tried again
            try:
                callback(self._message_to_python(message, qname, queue))  # type: ignore[no-untyped-call]
            except Exception as exc:  # noqa: BLE001 - one message, never the worker
                self._refuse_received(queue, message, exc)

    def _refuse_received(self, queue_url: str, message: dict[str, Any], exc: Exception) -> None:
        if isinstance(exc, InvalidMessage):
            reason = str(exc)
            log.warning("refused a message from %s: %s", queue_url.rsplit("/", 1)[-1], reason)
        else:
            reason = f"{type(exc).__name__}: {exc}"
            log.error("delivering a message failed: %s", reason, exc_info=exc)
        reason = " ".join(reason.split())[:500]
        tag = message.get("ReceiptHandle")
        try:
            delivered = self.qos.get(tag)
        except KeyError:
            self._dead_letter(queue_url, message, reason)
            return
        delivered.delivery_info[REASON_KEY] = reason  # a consumer got it, then failed
        self.basic_reject(tag, requeue=False)  # type: ignore[no-untyped-call]

    # -- acknowledgements in batches ----------------------------------------------------

    _acks: dict[str, list[str]] | None = None
    _ack_flush_scheduled = False

    # kombu deletes each acknowledged message at once; here in batches of ten.
    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        hub = self.hub
        try:
            info = self.qos.get(delivery_tag).delivery_info
            url, receipt = info["sqs_queue"], info["sqs_message"]["ReceiptHandle"]
        except (KeyError, TypeError):
            hub = None
        else:
            if info.get(
                DELETED_ELSEWHERE
            ):  # the pool process deletes it (cloudworker.results.finishing)
                virtual.Channel.basic_ack(self, delivery_tag)  # type: ignore[no-untyped-call]
                return
        if hub is None:  # no event loop to flush from: delete now, as kombu does
            try:
                super().basic_ack(delivery_tag, multiple)  # type: ignore[no-untyped-call]
            except Exception as exc:  # noqa: BLE001 - kombu released it; it comes back later
                log.warning("could not delete an acknowledged message: %s", exc)
            return
        if self._acks is None:
            self._acks = {}
        pending = self._acks.setdefault(url, [])
        pending.append(receipt)
        virtual.Channel.basic_ack(self, delivery_tag)  # type: ignore[no-untyped-call]
        if len(pending) >= BATCH:
            self._flush_acks(url)
        elif not self._ack_flush_scheduled:
            self._ack_flush_scheduled = True
            hub.call_later(_ACK_DELAY, self.flush_acks)

    def flush_acks(self) -> None:
        """Delete every acknowledged message still waiting."""
        self._ack_flush_scheduled = False
        for url in list(self._acks or {}):
            self._flush_acks(url)

    def _flush_acks(self, url: str) -> None:
        receipts = (self._acks or {}).pop(url, [])
        for batch in batches(receipts):
            entries = receipt_entries(batch)
            try:
                response = self.sqs().delete_message_batch(QueueUrl=url, Entries=entries)
            except Exception as exc:  # noqa: BLE001 - they come back after the visibility timeout
                log.warning("could not delete %d acknowledged message(s): %s", len(entries), exc)
                continue
            if response.get("Failed"):
                log.warning("%d acknowledged message(s) not deleted", len(response["Failed"]))

    def close(self) -> None:
        self.flush_acks()
        super().close()

    # -- warm shutdown: held messages handed back at once ---------------------------------

    #: Set by a stopping worker (worker/shutdown.py): what it gives back goes back at once.
    handing_back = False

    # kombu private: at channel close, and for a message rejected with requeue, it
    # hides the original for wait_time_seconds (20 s on AWS) more. Here both hand
    # it back at once: a closing channel (a worker shutting down, SIGTERM: a
    # scale-in, systemd) to other workers, and a message rejected with requeue
    # (Celery's Reject(requeue=True)) to the queue, as RabbitMQ does. A task that
    # requeues itself every time is not a loop forever: the task queues' redrive
    # policy (deploy/provision.py, cloudworker.yaml) dead-letters it after 5 receives.
    def _restore(self, message: Any, *args: Any, **kwargs: Any) -> Any:
        info = message.delivery_info or {}
        sqs_message, url = info.get("sqs_message"), info.get("sqs_queue")
        if not sqs_message or not url:
            return super()._restore(message, *args, **kwargs)  # type: ignore[no-untyped-call]
        try:
            self.sqs().change_message_visibility(
                QueueUrl=url, ReceiptHandle=sqs_message["ReceiptHandle"], VisibilityTimeout=0
            )
        except Exception as exc:  # noqa: BLE001 - it comes back after its visibility timeout
            log.warning("could not hand a held message back: %s", exc)
        return None

    def _hand_back_received(self, queue_url: str, messages: list[dict[str, Any]]) -> None:
        """A receive answered while the worker stops: nothing of it runs here."""
        receipts = [message["ReceiptHandle"] for message in messages]
        try:
            for batch in batches(receipts):
                self.sqs().change_message_visibility_batch(
                    QueueUrl=queue_url, Entries=receipt_entries(batch, VisibilityTimeout=0)
                )
        except Exception as exc:  # noqa: BLE001 - they come back after their visibility timeout
            log.warning("could not hand back %d message(s) received late: %s", len(receipts), exc)
        else:
            log.info("handed back %d message(s) received while stopping", len(receipts))

    def finish_receives(self, timeout: float) -> None:
        """Let the receives in progress answer, without the event loop, for ``timeout`` s.

        A long poll sent before the worker began to stop can still take messages,
        then or later (those handed back at once included), and the stopped event
        loop would never read them: they would stay hidden for the visibility
        timeout. Run to their end, their answers are handed back.
        """
        connection = self._asynsqs
        client = getattr(connection, "_httpclient", None)
        if isinstance(client, _TimedCurlClient):
            # Receiver queues (control replies, events) hold nothing to hand back:
            # their long polls are not waited for.
            receivers = self.receiver_names.prefix
            client.finish(timeout, lambda url: not name_of(url).startswith(receivers))

    # -- delays through SQS --------------------------------------------------------------

    # kombu private: publishes; here an eta becomes SQS DelaySeconds, and a message's
    # group travels with the task too.
    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        properties = message.setdefault("properties", {})
        headers = message.get("headers")
        group = properties.get("MessageGroupId") or (
            headers.get(GROUP_HEADER) if isinstance(headers, dict) else None
        )
        if group is not None:
            # kombu sends the property; the header keeps it on every re-send: a retry
            # (Celery copies a task's own headers onto it), a re-delay, a dead letter.
            properties["MessageGroupId"] = str(group)
            if isinstance(headers, dict):
                headers[GROUP_HEADER] = str(group)
        queue = self.priority_lanes.lane_of(queue, properties.get("priority"))
        fifo = self.canonical_queue_name(queue).endswith(".fifo")
        if not fifo and "delay_seconds" not in properties and "DelaySeconds" not in properties:
            # (SQS delays no single FIFO message: a worker holds one hidden until due.)
            delay = seconds_until_due(headers)
            if delay > 0:
                properties["delay_seconds"] = min(MAX_DELAY_SECONDS, math.ceil(delay))
        try:
            super()._put(queue, message, **kwargs)  # type: ignore[no-untyped-call]
        except (QueueNotProvisioned, ClientError) as exc:
            if not self.is_receiver_queue(queue) or not (
                isinstance(exc, QueueNotProvisioned) or is_gone(exc)
            ):
                raise
            # A control reply for a process that has exited, or whose queue was
            # deleted since its URL was looked up: nobody is listening there.
            self._queue_cache.pop(self.canonical_queue_name(queue), None)
            log.info("receiver queue for %s is gone; message dropped", queue)

    def _sent_back_delayed(self, queue_url: str, qname: str, message: dict[str, Any]) -> bool:
        """Send ``message`` back, delayed again, if it is due later; whether it was.

        On a FIFO queue, where SQS delays no single message, it stays received and
        hidden until it is due (up to 12 hours a time): its message group waits
        behind it, as FIFO order wants.
        """
        headers = _headers_of(self, message)
        delay = seconds_until_due(headers)
        if delay <= _DUE_SLACK:
            return False
        client = self.sqs(queue=qname)
        if queue_url.endswith(".fifo"):
            client.change_message_visibility(
                QueueUrl=queue_url,
                ReceiptHandle=message["ReceiptHandle"],
                VisibilityTimeout=min(MAX_VISIBILITY_SECONDS, math.ceil(delay)),
            )
            log.info("task due in %.0f s kept hidden in %s until then", delay, qname)
            return True
        client.send_message(
            QueueUrl=queue_url,
            MessageBody=message["Body"],
            DelaySeconds=min(MAX_DELAY_SECONDS, math.ceil(delay)),
            **_group_of(headers),
        )
        client.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        log.info("task due in %.0f s sent back to %s, delayed", delay, qname)
        return True

    # -- purge: PurgeQueue, or a drain within 60 s of the last one ---------------------

    # kombu private: its count loop adds the queue's size ten times (it stops only on
    # an empty queue), and its PurgeQueue fails within 60 s of the last one.
    def _purge(self, queue: str) -> int:
        url = self._new_queue(queue)
        client = self.sqs(queue=queue)
        size = int(self._size(queue))  # type: ignore[no-untyped-call]
        try:
            client.purge_queue(QueueUrl=url)
        except ClientError as exc:
            if not is_purge_in_progress(exc):
                raise
            drained = self._drain(client, url)
            log.info("%s was purged less than 60 s ago: drained %d message(s)", queue, drained)
            return drained
        return size

    def _drain(self, client: Any, url: str) -> int:
        """Receive and delete ten at a time until a receive finds none; how many were deleted."""
        deleted = 0
        while True:
            received = client.receive_message(
                QueueUrl=url, MaxNumberOfMessages=BATCH, WaitTimeSeconds=_DRAIN_WAIT
            ).get("Messages", [])
            if not received:
                return deleted
            entries = receipt_entries([message["ReceiptHandle"] for message in received])
            response = client.delete_message_batch(QueueUrl=url, Entries=entries)
            deleted += len(response.get("Successful", []))
            if response.get("Failed"):  # they come back after their visibility timeout
                log.warning("draining: %d message(s) not deleted", len(response["Failed"]))

    # -- surviving endpoint faults -----------------------------------------------------

    _receive_failures = 0
    _receive_pause = 0.0

    # kombu private: a failed receive is a list it crashes on; one bad message fails its batch.
    def _on_messages_ready(self, queue: str, qname: str, messages: Any) -> int:
        if self.connection is None:
            return 0  # closed meanwhile (see _on_receive_error); SQS delivers them again
        if isinstance(messages, dict):
            if self._receive_failures:
                log.info("receiving from %s works again", qname)
                self._receive_failures = 0
            received = messages.get("Messages")
            if received and self.handing_back:
                self._hand_back_received(queue, received)
                return 0
            if not received or qname not in self.connection._callbacks:
                count: int = super()._on_messages_ready(queue, qname, messages)  # type: ignore[no-untyped-call]
                return count
            self._deliver_each(queue, qname, received)
            return len(received)
        self._receive_failures += 1
        pause_ms = get_exponential_backoff_interval(
            factor=_BACKOFF_FIRST_MS,
            retries=self._receive_failures - 1,
            maximum=_BACKOFF_MAX_MS,
            full_jitter=True,
        )
        self._receive_pause = pause_ms / 1000
        log.warning(
            "receiving from %s failed (server error, timeout or lost connection, %d in a row); "
            "trying again in %.1f s",
            qname,
            self._receive_failures,
            self._receive_pause,
        )
        return 0

    # kombu private: a receive looks the queue's URL up first (GetQueueUrl, when not
    # cached); a failure there was an error in the event loop's timer, which ended that
    # queue's receive loop for good: the worker stayed up and never received again.
    def _get_async(self, queue: str, count: int = 1, callback: Any = None) -> Any:
        try:
            return super()._get_async(queue, count, callback)  # type: ignore[no-untyped-call]
        except Exception as exc:  # noqa: BLE001 - a failed receive: tried again after a backoff
            ready = transform(self._on_messages_ready, callback, "", queue)
            self._on_receive_error(self.canonical_queue_name(queue), ready, exc)
            return ready

    # kombu private: an error answer of an async receive would end the worker.
    def _get_from_sqs(
        self, queue_name: str, queue_url: str, connection: Any, count: int = 1, callback: Any = None
    ) -> Any:
        # kombu raises an error answer (4xx) of an asynchronous receive into the
        # event loop, which ends the worker: catch it and count a failed receive.
        guarded = promise(callback, on_error=partial(self._on_receive_error, queue_name, callback))
        return super()._get_from_sqs(queue_name, queue_url, connection, count, guarded)  # type: ignore[no-untyped-call]

    def _on_receive_error(self, qname: str, callback: Any, exc: BaseException) -> None:
        if self.connection is None:
            # The channel closed while its receive was in flight (a client that
            # shares a process with a worker, whose event loop ran the receive,
            # deleted its reply queue): nothing waits for this answer any more.
            log.debug("receive from %s ended after its channel closed: %s", qname, exc)
            return
        log.warning("receiving from %s failed: %s", qname, exc)
        if _is_missing_queue(exc):
            self._queue_cache.pop(qname, None)
            self.revive_receiver(qname)
        callback([])  # not a dict: a failed receive, retried after a backoff

    # kombu private: schedules the next receive; here after the backoff of a failure.
    def _loop1(self, queue: str, messages_fetched: Any = None) -> None:
        hub = self.hub
        if self._receive_failures and hub is not None:
            hub.call_later(self._receive_pause, self._schedule_queue, queue)
            return
        super()._loop1(queue, messages_fetched)

    # kombu private: the receive of the pools without an event loop (solo, threads,
    # gevent, eventlet). kombu's delivered a batch whole, with none of the steps above;
    # here it takes the asynchronous path's: each message delivered alone (a bad one
    # dead-lettered), a task due later delayed again, a failed receive retried after a
    # backoff, a stopping worker's late receive handed back.
    def _get_bulk(self, queue: str, max_if_unlimited: int = 10, callback: Any = None) -> None:
        if self.is_receiver_queue(queue):  # control replies, events: kombu's, as they were
            super()._get_bulk(queue, max_if_unlimited, callback)
            return
        count = self._get_message_estimate()  # type: ignore[no-untyped-call]
        if count:
            qname = self.canonical_queue_name(queue)
            try:
                url = self._new_queue(queue)
                # One queue after another here: with several, an empty queue's long poll
                # would hold up a busy one for the whole wait.
                several = len(set(self._active_queues)) > 1
                answer = self.sqs(queue=qname).receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=count,
                    WaitTimeSeconds=min(self.wait_time_seconds, 1)
                    if several
                    else self.wait_time_seconds,
                    AttributeNames=["ApproximateReceiveCount"],
                    MessageAttributeNames=["All"],
                )
            except Exception as exc:  # noqa: BLE001 - a failed receive: tried again after a backoff
                log.warning("receiving from %s failed: %s", qname, exc)
                if _is_missing_queue(exc):
                    self._queue_cache.pop(qname, None)
                self._on_messages_ready("", queue, [])  # counts it, and sets the pause
                time.sleep(self._receive_pause)
                raise Empty() from None
            if self._on_messages_ready(url, queue, answer):
                return
        raise Empty()

    # kombu private: the async client; here with request timeouts (kombu sets none).
    def asynsqs(self, queue: str | None = None) -> Any:
        connection = super().asynsqs(queue=queue)  # type: ignore[no-untyped-call]
        if not isinstance(connection._httpclient, _TimedCurlClient):
            connection._httpclient = _TimedCurlClient(
                connection._httpclient.hub, timeout=self.wait_time_seconds + _REQUEST_MARGIN
            )
        return connection


def _is_missing_queue(exc: BaseException) -> bool:
    """Whether an error answer says the queue does not exist (kombu gives only its text)."""
    text = str(exc)
    return any(code in text for code in GONE_CODES)


def seconds_until_due(headers: Any) -> float:
    """Seconds until a task message's ``eta`` header (0 when it has none, or is due)."""
    eta = headers.get("eta") if isinstance(headers, dict) else None
    if not isinstance(eta, str):
        return 0.0
    try:
        due = datetime.fromisoformat(eta)
    except ValueError:
        return 0.0
    if due.tzinfo is None:
        due = due.replace(tzinfo=UTC)
    return max(0.0, (due - datetime.now(UTC)).total_seconds())


def _headers_of(channel: SQS.Channel, message: dict[str, Any]) -> Any:
    body = str(message["Body"])
    if body.startswith("{") and '"eta": "' not in body and '"eta":"' not in body:
        return None  # plain JSON with no eta: decided without parsing it in the consumer loop
    try:
        text = channel._decode_python_message_body(message["Body"]).decode()  # type: ignore[no-untyped-call]
        check_depth(text)
        envelope = json.loads(text)
    except (ValueError, LimitExceeded, AttributeError, TypeError):
        return None  # what is wrong with it is found, and said, when it is delivered
    return envelope.get("headers") if isinstance(envelope, dict) else None


def _group_of(headers: Any) -> dict[str, str]:
    """``{"MessageGroupId": ...}`` for a task message's group, if it has one."""
    group = headers.get(GROUP_HEADER) if isinstance(headers, dict) else None
    return {"MessageGroupId": group} if isinstance(group, str) and group else {}


def _receive_count(message: dict[str, Any]) -> int:
    """How many times SQS has handed ``message`` out, this time included (1 if unknown)."""
    try:
        return int((message.get("Attributes") or {}).get("ApproximateReceiveCount", 1))
    except (TypeError, ValueError):
        return 1


def _envelope_problem(payload: Any) -> str | None:
    """Why a parsed message is not a kombu envelope kombu and Celery can take."""
    if not isinstance(payload, dict):
        return None  # not JSON at all: kombu wraps it as a raw body
    if "properties" not in payload:
        return None  # JSON not sent by kombu (an S3 event, say): delivered as a raw body
    properties = payload["properties"]
    if not isinstance(properties, dict):
        return "properties must be a JSON object"
    for name, kinds in _ENVELOPE_TYPES.items():
        where = properties if name in _PROPERTY_NAMES else payload
        if where.get(name) is not None and not isinstance(where[name], kinds):
            return f"{name} must be {kinds[0].__name__}"
    if properties.get("body_encoding") not in (None, "base64"):
        return f"unknown body_encoding {properties['body_encoding']!r:.40}"
    return None


#: The envelope's fields kombu reads, with the types it can take.
_ENVELOPE_TYPES: dict[str, tuple[type, ...]] = {
    "body": (str,),
    "headers": (dict,),
    "content-type": (str,),
    "content-encoding": (str,),
    "delivery_info": (dict,),
    "delivery_tag": (str,),
    "reply_to": (str,),
    "correlation_id": (str,),
    "priority": (int,),
}
_PROPERTY_NAMES = frozenset(
    {"delivery_info", "delivery_tag", "reply_to", "correlation_id", "priority"}
)


class _TimedCurlClient(CurlClient):
    """kombu's pycurl client, with a connect timeout and a total timeout on every request."""

    def __init__(self, hub: Any, *, timeout: float) -> None:
        super().__init__(hub)
        self._timeout_ms = int(timeout * 1000)

    def finish(self, timeout: float, wanted: Callable[[str], bool]) -> None:
        """Drive the requests to ``wanted`` queue URLs to their answers (callbacks too), no hub."""
        deadline = time.monotonic() + timeout
        while not self._closed and any(wanted(url) for url in self._queues_in_progress()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("a receive still had no answer after %.0f s", timeout)
                return
            self._multi.select(min(remaining, 0.5))
            self._timeout_check()  # type: ignore[no-untyped-call]

    def _queues_in_progress(self) -> list[str]:
        """The queue URL of each request in progress (JSON protocol: in the body)."""
        urls = []
        for curl in self._curls:
            request = (getattr(curl, "info", None) or {}).get("request")
            if request is None:
                continue
            try:
                urls.append(str(json.loads(request.body)["QueueUrl"]))
            except (TypeError, ValueError, KeyError):
                urls.append(str(request.url))
        return urls

    # kombu private: sets no timeout on a pycurl request.
    def _setup_request(
        self, curl: Any, request: Any, buffer: Any, headers: Any, *args: Any
    ) -> None:
        super()._setup_request(curl, request, buffer, headers, *args)  # type: ignore[no-untyped-call]
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, _CONNECT_TIMEOUT * 1000)
        curl.setopt(pycurl.TIMEOUT_MS, self._timeout_ms)


class Transport(SQS.Transport):
    """kombu's SQS transport with :class:`Channel`, advertising fanout exchanges."""

    Channel = Channel
    implements = SQS.Transport.implements.extend(exchange_type=frozenset(["direct", "fanout"]))

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)  # type: ignore[no-untyped-call]
        options = client.transport_options
        if not options.get(ADOPTED_OPTION):
            _adopted_options(options)


def _adopted_options(options: dict[str, Any]) -> None:
    """Fill a connection's options with those of its app, adopting the app first.

    A ``cloudworker://`` connection made before its app was adopted (an app
    that sends a task by name before any of its tasks is used: Celery's
    ``send_task`` does not finalize the app) is the current app's: adopted now,
    its options (queue prefix, region...) are this connection's too.
    """
    from celery import current_app

    from cloudworker.application import adopt, uses_scheme

    app = current_app._get_current_object()
    if uses_scheme(app.conf):
        for key, value in adopt(app).conf.broker_transport_options.items():
            options.setdefault(key, value)
