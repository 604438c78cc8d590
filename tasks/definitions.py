"""The tasks: thin Celery wrappers around the pure computations.

They add only what a message needs: the configured limits and a check that the
argument has the right type (a JSON message can carry anything).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError
from celery import Celery, Task

from tasks import imaging, inbox, stats
from tasks.errors import InvalidImage, InvalidNumbers

__all__ = ["TaskSet", "register"]


class TaskSet(NamedTuple):
    """The tasks registered on an app."""

    compute_stats: Task
    grayscale_image: Task
    process_inbox_object: Task


def register(app: Celery) -> TaskSet:
    """Register cloudworker's tasks on ``app``."""
    settings = app.services.settings

    @app.task(name="tasks.compute_stats")  # type: ignore[untyped-decorator]
    def compute_stats(numbers: Any) -> dict[str, Any]:
        """Count, mean, median, minimum and maximum of a list of integers."""
        if not isinstance(numbers, list):
            raise InvalidNumbers(
                f"numbers must be a list of integers, not {type(numbers).__name__}"
            )
        return stats.compute_stats(numbers, max_count=settings.max_integers)

    @app.task(name="tasks.grayscale_image")  # type: ignore[untyped-decorator]
    def grayscale_image(image: Any, format: str | None = None) -> bytes:
        """The image turned black-and-white, in its own format or ``format``."""
        if not isinstance(image, bytes):
            raise InvalidImage(f"image must be bytes, not {type(image).__name__}")
        return imaging.to_grayscale(image, output_format=format, max_pixels=settings.max_pixels)

    @app.task(  # type: ignore[untyped-decorator]
        name=inbox.PROCESS_TASK,
        autoretry_for=(BotoCoreError, ClientError),
        retry_backoff=True,
        retry_jitter=True,
        max_retries=5,
    )
    def process_inbox_object(key: str) -> str:
        """Turn an image dropped under the inbox prefix grey, into the outbox."""
        return inbox.process_object(app.services.store(), key, settings)

    return TaskSet(compute_stats, grayscale_image, process_inbox_object)
