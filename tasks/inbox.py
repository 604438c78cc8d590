"""The S3 inbox: images dropped under ``inbox/`` are turned grey into ``outbox/``.

S3 sends an event notification for each object created under the inbox prefix
to the inbox-events SQS queue (set up by the provisioning step). Inside every
worker, :class:`InboxConsumer` (a Celery consumer bootstep, no extra daemon)
reads those events and turns each new object into an ordinary
``tasks.process_inbox_object`` task on the task queue, so the work itself runs
in the pool with the same at-least-once delivery as any task. The event is
acknowledged once the task is queued.

:func:`process_object` writes ``outbox/<name>`` for an image, or
``outbox/<name>.error.json`` with the reason for one that cannot be processed,
once (a conditional write), and never raises for bad input, so nothing loops.
The same object processed twice writes the same bytes (idempotent).
"""

from __future__ import annotations

import json
import logging
import posixpath
from typing import Any
from urllib.parse import unquote_plus

from celery import bootsteps
from kombu.entity import Queue
from kombu.message import Message
from kombu.messaging import Consumer

from config import Settings
from tasks import imaging
from tasks.errors import InvalidInput
from tasks.objectstore import ObjectStore

__all__ = ["InboxConsumer", "created_keys", "process_object"]

log = logging.getLogger(__name__)

PROCESS_TASK = "tasks.process_inbox_object"


def created_keys(event_body: str | bytes, inbox_prefix: str) -> list[str]:
    """The keys of objects created under ``inbox_prefix`` named by an S3 event message."""
    try:
        event = json.loads(event_body)
    except ValueError:
        log.warning("ignoring an inbox event that is not JSON: %.80r", event_body)
        return []
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list):  # e.g. the s3:TestEvent S3 sends once
        return []
    keys = []
    for record in records:
        try:
            name = str(record["eventName"])
            key = unquote_plus(str(record["s3"]["object"]["key"]))
        except (KeyError, TypeError):
            continue
        if name.startswith("ObjectCreated") and key.startswith(inbox_prefix) and key[-1] != "/":
            keys.append(key)
    return keys


def outbox_key(key: str, settings: Settings) -> str:
    """Where the grey version of inbox object ``key`` goes."""
    return settings.outbox_prefix + key[len(settings.inbox_prefix) :]


def process_object(store: ObjectStore, key: str, settings: Settings) -> str:
    """Turn inbox object ``key`` grey into the outbox; return the key written."""
    target = outbox_key(key, settings)
    data = store.get(key)
    if data is None:
        log.info("inbox object %s is gone; nothing to do", key)
        return ""
    try:
        output_format = _format_for(key)
        grey = imaging.to_grayscale(
            data, output_format=output_format, max_pixels=settings.max_pixels
        )
    except InvalidInput as exc:
        error_key = f"{target}.error.json"
        report = {"key": key, "error": type(exc).__name__, "reason": str(exc)}
        if not store.put(error_key, json.dumps(report).encode(), only_if_absent=True):
            log.info("%s already reported", key)
        return error_key
    store.put(target, grey)
    return target


def _format_for(key: str) -> str | None:
    extension = posixpath.splitext(key)[1]
    if not extension:
        return None
    try:
        return imaging.image_format_for_extension(extension)
    except InvalidInput:
        return None  # an unknown extension: keep the image's own format


class InboxConsumer(bootsteps.ConsumerStep):  # type: ignore[misc]
    """Reads S3 events from the inbox-events queue and queues a task for each new object."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._app = parent.app
        self._settings: Settings = parent.app.services.settings

    def get_consumers(self, channel: Any) -> list[Consumer]:
        queue = Queue(self._settings.inbox_queue)  # type: ignore[no-untyped-call]
        consumer = Consumer(channel, queues=[queue], on_message=self._on_event)  # type: ignore[no-untyped-call]
        return [consumer]

    def _on_event(self, message: Message) -> None:
        for key in created_keys(message.body, self._settings.inbox_prefix):
            self._app.send_task(PROCESS_TASK, args=[key], ignore_result=True)
            log.info("inbox: queued %s", key)
        message.ack()  # type: ignore[no-untyped-call]
