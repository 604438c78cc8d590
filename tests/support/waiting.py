"""One way for a test to wait: on a condition, never a fixed sleep.

Integration tests wait for things that happen in other processes (a worker, the
endpoint, Flower, Prometheus): a task ran, a queue emptied, a log line came. They
poll the condition with :func:`eventually`, which returns as soon as it holds, so a
fast machine never waits for a slow one's margin, and fails with the test's own
words when it never does.

    eventually(lambda: marker.exists(), timeout=30, what="the task ran")
    depth = eventually(lambda: stack.queue_depth(name) == 0 or None, what="queue drained")
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["eventually"]

T = TypeVar("T")


def eventually(
    condition: Callable[[], T | None],
    *,
    timeout: float = 60.0,
    interval: float = 0.1,
    what: str | Callable[[], str] = "the condition",
) -> T:
    """The first truthy value of ``condition()`` within ``timeout`` seconds.

    ``condition`` is called at once, then every ``interval`` seconds, and once more
    at the deadline. Past it, :class:`AssertionError` names ``what`` (a string, or a
    callable called then: a log tail, the last value seen) and the last value.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
    described = what() if callable(what) else what
    raise AssertionError(f"{described}: not within {timeout:g} s (last: {value!r})")
