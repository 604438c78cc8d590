"""cloudworker's client.

The Python API is Celery's own: the tasks are imported from :mod:`tasks` and
called with ``.delay()``; ``.get()`` waits on this process's SQS response queue
and raises the worker's typed error (:mod:`tasks.errors`) on bad input::

    from client import compute_stats, grayscale_image, InvalidInput
    compute_stats.delay([1, 2, 3]).get(timeout=60)

The command line is ``python -m client`` (:mod:`client.cli`).
"""

from __future__ import annotations

from typing import Any

from client.numbers import parse_integers
from tasks.errors import (
    CloudworkerError,
    InvalidArguments,
    InvalidImage,
    InvalidInput,
    InvalidMessage,
    InvalidNumbers,
    LimitExceeded,
    PayloadError,
    ResponseQueueError,
)

__all__ = [
    "CloudworkerError",
    "InvalidArguments",
    "InvalidImage",
    "InvalidInput",
    "InvalidMessage",
    "InvalidNumbers",
    "LimitExceeded",
    "PayloadError",
    "ResponseQueueError",
    "app",
    "compute_stats",
    "grayscale_image",
    "parse_integers",
]


def __getattr__(name: str) -> Any:
    # The app and the tasks are made on first use (see tasks/__init__.py).
    if name in ("app", "compute_stats", "grayscale_image"):
        import tasks

        return getattr(tasks, name)
    raise AttributeError(f"module 'client' has no attribute {name!r}")
