"""cloudworker's Celery app and tasks (``celery -A tasks worker``).

The Python API is Celery's own::

    from tasks import compute_stats, grayscale_image
    stats = compute_stats.delay([3, 1, 2]).get(timeout=60)
    grey = grayscale_image.delay(open("photo.jpg", "rb").read()).get(timeout=60)

A task that fails on bad input raises the same typed error on the caller
(:mod:`cloudworker.errors`), carrying the worker's reason. Everything public is
named here; every other module of the package is internal.
"""

from __future__ import annotations

import threading
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
    "app",
    "batch_sends",
    "compute_stats",
    "create_app",
    "grayscale_image",
]

_lock = threading.Lock()
_made: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    # The app is made on first use, not at import: importing ``cloudworker.errors`` or the
    # pure computations must not build a Celery app or read the environment.
    if name == "create_app":
        from cloudworker.application import create_app

        return create_app
    if name == "CloudworkerCelery":
        from cloudworker.application import CloudworkerCelery

        return CloudworkerCelery
    if name == "batch_sends":
        from cloudworker.sqs.batch_sends import batch_sends

        return batch_sends
    if name in ("app", "compute_stats", "grayscale_image"):
        with _lock:
            if not _made:
                from cloudworker.application import create_app
                from tasks.definitions import register

                app = create_app()
                _made.update(app=app, **register(app)._asdict())
        return _made[name]
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")
