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

import cloudworker

# The library's public names (its errors, create_app, ...) and the reference app's tasks.
__all__ = [*cloudworker.__all__, "app", "compute_stats", "grayscale_image"]  # noqa: PLE0604

_lock = threading.Lock()
_made: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    # The app is made on first use, not at import: importing ``cloudworker.errors`` or the
    # pure computations must not build a Celery app or read the environment.
    if name in cloudworker.__all__:  # the library's public names, under this name too
        return getattr(cloudworker, name)
    if name in ("app", "compute_stats", "grayscale_image"):
        with _lock:
            if not _made:
                from cloudworker import create_app
                from tasks.definitions import register

                app = create_app()
                _made.update(app=app, **register(app)._asdict())
        return _made[name]
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")
