"""cloudworker's client.

The Python API is Celery's own: the tasks are imported from :mod:`tasks` and
called with ``.delay()``; ``.get()`` waits on this process's SQS response queue
and raises the worker's typed error (:mod:`cloudworker.errors`) on bad input::

    from client import compute_stats, grayscale_image, InvalidInput
    compute_stats.delay([1, 2, 3]).get(timeout=60)

Every public name of :mod:`tasks` is one of this package's too, plus
:func:`~client.numbers.parse_integers`. The command line is ``python -m client``
(:mod:`client.cli`).
"""

from __future__ import annotations

from typing import Any

import tasks
from client.numbers import parse_integers

__all__ = ["parse_integers", *tasks.__all__]  # noqa: PLE0604 - tasks' public names, once


def __getattr__(name: str) -> Any:
    # The app and the tasks are made on first use (see tasks/__init__.py).
    if name in tasks.__all__:
        return getattr(tasks, name)
    raise AttributeError(f"module 'client' has no attribute {name!r}")
