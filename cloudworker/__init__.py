"""cloudworker: Celery on Amazon SQS, with results and large payloads in Amazon S3.

A library a Celery app is built on::

    from cloudworker import create_app

    app = create_app()          # settings from CLOUDWORKER_* (or create_app(Settings(...)))

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    add.delay(2, 3).get(timeout=60)   # pushed back on this process's response queue

Everything public is named here; every other module is internal. The pieces:
``sqs/`` the kombu transport, ``results/`` the result backend and response
queues, ``worker/`` the worker's Celery components, and beside them the codec
and claim-check, S3 key layout, AWS clients, settings and the error tree::

    CloudworkerError                 (cloudworker.errors: the whole tree is drawn there)
    ├── InvalidInput                 the caller's input cannot be processed
    ├── InvalidMessage               a message no worker may run
    ├── LimitExceeded, PayloadError  sizes and claim-checked payloads
    └── QueueNotProvisioned, ...     AWS resources

The reference app (``compute_stats``, ``grayscale_image``, the S3 inbox) lives
in this repository's ``tasks/``, written on this library as a user writes theirs.
"""

from __future__ import annotations

from typing import Any

from cloudworker.errors import (
    BatchSendError,
    CloudworkerError,
    InvalidArguments,
    InvalidImage,
    InvalidInput,
    InvalidMessage,
    InvalidNumbers,
    LimitExceeded,
    PayloadError,
    QueueGone,
    QueueNotProvisioned,
    ResponseQueueError,
)
from cloudworker.settings import Settings, SettingsError

__all__ = [
    "BatchSendError",
    "CloudworkerCelery",
    "CloudworkerError",
    "InvalidArguments",
    "InvalidImage",
    "InvalidInput",
    "InvalidMessage",
    "InvalidNumbers",
    "LimitExceeded",
    "PayloadError",
    "QueueGone",
    "QueueNotProvisioned",
    "ResponseQueueError",
    "Settings",
    "SettingsError",
    "batch_sends",
    "create_app",
]


def __getattr__(name: str) -> Any:
    # Celery is imported on first use, not at import: importing the errors or the
    # settings (a client's error handling, a deploy script) builds nothing.
    if name == "create_app":
        from cloudworker.application import create_app

        return create_app
    if name == "CloudworkerCelery":
        from cloudworker.application import CloudworkerCelery

        return CloudworkerCelery
    if name == "batch_sends":
        from cloudworker.sqs.batch_sends import batch_sends

        return batch_sends
    raise AttributeError(f"module 'cloudworker' has no attribute {name!r}")
