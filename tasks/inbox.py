"""The S3 inbox: images dropped under ``inbox/`` are turned grey into ``outbox/``.

S3 sends an event notification for each object created under the inbox prefix
to the inbox-events SQS queue (set up by the provisioning step). Inside every
worker, :class:`InboxConsumer` (a Celery consumer bootstep, no extra daemon)
reads those events and turns each new object into an ordinary
``tasks.process_inbox_object`` task on the task queue, so the work itself runs
in the pool with the same at-least-once delivery as any task. The event is
acknowledged once the task is queued. With tracing on, each object is the root
of a trace of its own (:func:`cloudworker.inbox_span`), its task a part of it.

:func:`process_object` writes ``outbox/<name>`` for an image, or
``outbox/<name>.error.json`` with the reason for one that cannot be processed,
once (a conditional write), and never raises for a bad object, so nothing loops.
The same object processed twice writes the same bytes (idempotent).

Those names are a public contract, so they must never collide: an inbox object
whose name ends in ``.error.json`` is refused with an error report of its own
(``outbox/<name>.error.json``), so an image output never ends in ``.error.json``
and cannot overwrite another object's report. A key outside the inbox prefix
is not an inbox object at all; :func:`check_inbox_key` refuses it with
:class:`~cloudworker.errors.InvalidInput` (never retried) before anything is touched.
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

from cloudworker import InvalidInput, LimitExceeded, ObjectStore, Settings, inbox_span
from tasks.compute import imaging

__all__ = ["ERROR_SUFFIX", "InboxConsumer", "check_inbox_key", "created_keys", "process_object"]

log = logging.getLogger(__name__)

PROCESS_TASK = "tasks.process_inbox_object"

#: The end of every error report's name, and so of no image output's name.
ERROR_SUFFIX = ".error.json"


def check_inbox_key(key: str, settings: Settings) -> None:
    """Raise :class:`InvalidInput` unless ``key`` names an object under the inbox prefix.

    :func:`outbox_key` swaps the prefix for the outbox's, so any other key
    (``outbox/x``, a bare prefix, a "folder" ending in ``/``) would map to a
    meaningless or existing outbox name; such a key comes from a caller's bug,
    not from an upload, and is refused before anything is read or written.
    """
    if not _is_inbox_object(key, settings.inbox_prefix):
        raise InvalidInput(
            f"{key!r} is not an object under the inbox prefix {settings.inbox_prefix!r}"
        )


def _is_inbox_object(key: str, inbox_prefix: str) -> bool:
    return key.startswith(inbox_prefix) and key != inbox_prefix and not key.endswith("/")


def created_keys(event_body: str | bytes, inbox_prefix: str, *, base: str = "") -> list[str]:
    """The keys of objects created under ``inbox_prefix`` named by an S3 event message.

    S3 names an object by its whole key; the keys returned are relative to
    ``base`` (``CLOUDWORKER_S3_PREFIX``), as the object store takes them, and an
    object outside ``base + inbox_prefix`` is not one of the inbox's.
    Names ending in :data:`ERROR_SUFFIX` are kept: :func:`process_object`
    refuses them with an error report, so whoever dropped one learns why.
    """
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
        if not (name.startswith("ObjectCreated") and key.startswith(base)):
            continue
        key = key[len(base) :]
        if _is_inbox_object(key, inbox_prefix):
            keys.append(key)
    return keys


def outbox_key(key: str, settings: Settings) -> str:
    """Where the grey version of inbox object ``key`` goes."""
    return settings.outbox_prefix + key[len(settings.inbox_prefix) :]


def process_object(store: ObjectStore, key: str, settings: Settings) -> str:
    """Turn inbox object ``key`` grey into the outbox; return the key written.

    Raises :class:`InvalidInput` for a key outside the inbox (see
    :func:`check_inbox_key`). A name ending in :data:`ERROR_SUFFIX` is refused
    unread, with an error report, because its output would take the name of
    another object's report.
    """
    check_inbox_key(key, settings)
    target = outbox_key(key, settings)
    if key.endswith(ERROR_SUFFIX):
        reserved = f"names ending in {ERROR_SUFFIX} are reserved for error reports"
        return _report_error(store, key, target, InvalidInput(reserved))
    try:
        # Refused from its size, before its body is read (CLOUDWORKER_INBOX_MAX_BYTES).
        data = store.get(key, max_bytes=settings.inbox_max_bytes)
    except LimitExceeded as exc:
        return _report_error(store, key, target, exc)
    if data is None:
        log.info("inbox object %s is gone; nothing to do", key)
        return ""
    try:
        output_format = _format_for(key)
        grey = imaging.to_grayscale(
            data, output_format=output_format, max_pixels=settings.max_pixels
        )
    except InvalidInput as exc:
        return _report_error(store, key, target, exc)
    store.put(target, grey)
    return target


def _report_error(store: ObjectStore, key: str, target: str, exc: InvalidInput) -> str:
    """Write, once, why inbox object ``key`` was refused; return the report's key."""
    error_key = target + ERROR_SUFFIX
    report = {"key": key, "error": type(exc).__name__, "reason": str(exc)}
    if not store.put(error_key, json.dumps(report).encode(), only_if_absent=True):
        log.info("%s already reported", key)
    return error_key


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
        settings = self._settings
        for key in created_keys(message.body, settings.inbox_prefix, base=settings.s3_prefix):
            with inbox_span(self._settings, key):
                self._app.send_task(PROCESS_TASK, args=[key], ignore_result=True)
            log.info("inbox: queued %s", key)
        message.ack()  # type: ignore[no-untyped-call]
