"""A project's own Celery app and tasks, on cloudworker: no create_app, Celery's own terms.

``celery -A tasks worker`` runs it; ``import cloudworker`` registers the
``cloudworker://`` scheme its settings name (config/settings.py).
"""

from __future__ import annotations

from celery import Celery, Task

import cloudworker  # noqa: F401 - registers cloudworker://

app = Celery("shop")
app.config_from_object("config.settings", namespace="CELERY")


class AuditedTask(Task):
    """A plain ``celery.Task`` base of the project's own: its tasks get all of cloudworker."""

    def before_start(self, task_id: str, args: object, kwargs: object) -> None:
        self.started_here = True


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(base=AuditedTask)
def measure(data: str) -> int:
    """Its argument may be megabytes: it travels through S3, transparently."""
    return len(data)


@app.task
def report(size: int) -> str:
    """A result of megabytes: kept in S3, read back transparently."""
    return "x" * size


@app.task(bind=True)
def flaky(self: Task) -> int:
    """Fails once, then succeeds on its retry a second later."""
    if self.request.retries < 1:
        raise self.retry(countdown=1)
    return int(self.request.retries)


@app.task
def total(numbers: list[int]) -> int:
    return sum(numbers)


@app.task(bind=True)
def retry_budget(self: Task) -> int | None:
    """The task's own ``max_retries``: Celery's default, 3."""
    return self.max_retries
