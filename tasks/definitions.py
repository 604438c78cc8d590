"""The tasks: thin Celery wrappers around the pure computations.

They add only what a message needs: the configured limits, and each task's
check of its arguments (``argument_check``), which the client runs before it
sends and the worker before the pool (:mod:`cloudworker.worker.admission`). A JSON message
can carry anything, so each check says what the task accepts; the values may
still be claim-check references there, which are checked for their kind only
and checked in full once resolved.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError
from celery import Celery, Task

from cloudworker import InvalidImage, InvalidInput, InvalidNumbers, PayloadRef, Settings
from tasks import inbox
from tasks.compute import imaging, stats

__all__ = ["TaskSet", "register"]


class TaskSet(NamedTuple):
    """The tasks registered on an app."""

    compute_stats: Task
    grayscale_image: Task
    process_inbox_object: Task


def _numbers_check(settings: Settings) -> Any:
    def check(arguments: Mapping[str, Any]) -> None:
        numbers = arguments["numbers"]
        if isinstance(numbers, PayloadRef):
            if not numbers.is_json:
                raise InvalidNumbers("numbers must be a list of integers, not bytes")
            return
        stats.check_integers(numbers, max_count=settings.max_integers)

    return staticmethod(check)


def _image_check(arguments: Mapping[str, Any]) -> None:
    image = arguments["image"]
    raw = isinstance(image, bytes) or (isinstance(image, PayloadRef) and not image.is_json)
    if not raw:
        raise InvalidImage(f"image must be bytes, not {type(image).__name__}")
    imaging.check_output_format(arguments.get("format"))


def _inbox_check(settings: Settings) -> Any:
    def check(arguments: Mapping[str, Any]) -> None:
        key = arguments["key"]
        if not isinstance(key, str) or len(key) > 1024:
            raise InvalidInput(f"key must be an S3 key (text), not {type(key).__name__}")
        inbox.check_inbox_key(key, settings)

    return staticmethod(check)


def register(app: Celery) -> TaskSet:
    """Register the reference app's tasks on ``app``, and its S3 inbox's consumer.

    The inbox (``CLOUDWORKER_INBOX_ENABLED``) belongs to this app, not to the
    library: an app of a user's own gets no inbox consumer unless it adds one.
    """
    settings = app.services.settings
    if settings.inbox_enabled:
        app.steps["consumer"].add(inbox.InboxConsumer)

    @app.task(name="tasks.compute_stats", argument_check=_numbers_check(settings))  # type: ignore[untyped-decorator]
    def compute_stats(numbers: Any) -> dict[str, Any]:
        """Count, mean, median, minimum and maximum of a list of integers."""
        if not isinstance(numbers, list):
            raise InvalidNumbers(
                f"numbers must be a list of integers, not {type(numbers).__name__}"
            )
        return stats.compute_stats(numbers, max_count=settings.max_integers)

    @app.task(name="tasks.grayscale_image", argument_check=staticmethod(_image_check))  # type: ignore[untyped-decorator]
    def grayscale_image(image: Any, format: str | None = None) -> bytes:
        """The image turned black-and-white, in its own format or ``format``."""
        if not isinstance(image, bytes):
            raise InvalidImage(f"image must be bytes, not {type(image).__name__}")
        return imaging.to_grayscale(image, output_format=format, max_pixels=settings.max_pixels)

    @app.task(  # type: ignore[untyped-decorator]
        name=inbox.PROCESS_TASK,
        argument_check=_inbox_check(settings),
        autoretry_for=(BotoCoreError, ClientError),
        retry_backoff=True,
        retry_jitter=True,
        max_retries=5,
    )
    def process_inbox_object(key: str) -> str:
        """Turn an image dropped under the inbox prefix grey, into the outbox."""
        return inbox.process_object(app.services.store(), key, settings)

    return TaskSet(compute_stats, grayscale_image, process_inbox_object)
