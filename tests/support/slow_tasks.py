"""A slow task for reliability tests, loaded into test workers with ``--include``.

Each execution appends the pid of the process running it to a marker file, so a
test can count executions and find (and kill) the pool process; ``finished``, if
given, gets the pid when the execution ends, and ``again`` is how long a second
execution sleeps (one that was handed back or redelivered).
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery.exceptions import Reject

from tasks import app


@app.task(name="tests.slow")  # type: ignore[untyped-decorator]
def slow(
    seconds: float, marker: str, finished: str | None = None, again: float | None = None
) -> float:
    """Note this execution in ``marker``, sleep ``seconds``, then note it in ``finished``."""
    with open(marker, "a+", encoding="utf-8") as out:
        out.seek(0)
        repeated = bool(out.read().strip())
        out.write(f"{os.getpid()}\n")
    time.sleep(again if repeated and again is not None else seconds)
    if finished is not None:
        with open(finished, "a", encoding="utf-8") as out:
            out.write(f"{os.getpid()}\n")
    return seconds


class PlannedFailure(ValueError):
    """The failure a test asks for, by its own name."""


@app.task(name="tests.fail")  # type: ignore[untyped-decorator]
def fail(message: str) -> None:
    """Fail at run time (not at admission), as a task with a bug does."""
    raise PlannedFailure(message)


@app.task(name="tests.add")  # type: ignore[untyped-decorator]
def add(x: int, y: int) -> int:
    """The sum: a step of a canvas."""
    return x + y


@app.task(name="tests.total")  # type: ignore[untyped-decorator]
def total(values: list[int]) -> int:
    """The sum of a group's results: a chord's body."""
    return sum(values)


@app.task(name="tests.progress", bind=True)  # type: ignore[untyped-decorator]
def progress(self: Any, steps: int, pause: float) -> int:
    """Report ``current``/``total`` after each of ``steps`` steps: a progress bar's feed."""
    for step in range(1, steps + 1):
        time.sleep(pause)
        self.update_state(state="PROGRESS", meta={"current": step, "total": steps})
    return steps


@app.task(name="tests.retry_once", bind=True, max_retries=3)  # type: ignore[untyped-decorator]
def retry_once(self: Any, countdown: float) -> int:
    """Retry once after ``countdown`` seconds, then succeed with the number of retries."""
    if self.request.retries == 0:
        raise self.retry(exc=PlannedFailure("first try"), countdown=countdown)
    return int(self.request.retries)


@app.task(name="tests.record")  # type: ignore[untyped-decorator]
def record(values: list[Any], marker: str) -> list[Any]:
    """A chord's body that notes each execution in ``marker`` and returns what it got."""
    with open(marker, "a", encoding="utf-8") as out:
        out.write(f"{os.getpid()}\n")
    return values


@app.task(name="tests.started_at")  # type: ignore[untyped-decorator]
def started_at(values: list[Any]) -> float:
    """A chord's body that returns when it started (epoch seconds), for measurements."""
    return time.time()


@app.task(name="tests.requeue_once", bind=True)  # type: ignore[untyped-decorator]
def requeue_once(self: Any, marker: str) -> str:
    """Reject with requeue on a first delivery, succeed on a redelivery: Celery's pattern."""
    with open(marker, "a", encoding="utf-8") as out:
        out.write(f"{self.request.delivery_info.get('redelivered')}\n")
    if not self.request.delivery_info.get("redelivered"):
        raise Reject("not yet", requeue=True)
    return "second-pass"


@app.task(name="tests.retry_in_group", bind=True, max_retries=3)  # type: ignore[untyped-decorator]
def retry_in_group(self: Any, countdown: float) -> Any:
    """Retry once after ``countdown`` s, then answer the message group the retry came in."""
    if self.request.retries == 0:
        raise self.retry(exc=PlannedFailure("first try"), countdown=countdown)
    return (self.request.headers or {}).get("MessageGroupId")
