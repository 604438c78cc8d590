"""The base class of every cloudworker task."""

from __future__ import annotations

import logging
import random
from typing import Any

from celery import Task
from celery.exceptions import Retry

from tasks.awserrors import is_transient
from tasks.codec import PayloadRef
from tasks.errors import InvalidInput

__all__ = ["CloudworkerTask", "backoff"]

log = logging.getLogger(__name__)


def backoff(retries: int, *, first: float = 1.0, most: float = 60.0) -> float:
    """Seconds before retry number ``retries + 1``: doubling, capped, with full jitter."""
    return random.uniform(0, min(most, first * 2**retries))


class CloudworkerTask(Task):  # type: ignore[misc]
    """Resolves claim-checked arguments in the pool process, and deletes them after.

    The worker's consumer decodes each task body in its event loop, where a
    download would stall every other message; so large arguments arrive as
    :class:`~tasks.codec.PayloadRef` and are fetched here, in the process that
    runs the task. Once the task has ended (succeeded, or failed for good) the
    payloads are deleted, unless ``CLOUDWORKER_DELETE_CONSUMED_PAYLOADS`` is off;
    a task that will be retried, or a worker that dies mid-task, leaves them for
    the next delivery. The bucket's lifecycle rule removes any left behind.
    """

    #: Bad input is the caller's error: logged without a traceback, never retried.
    throws = (InvalidInput,)
    #: Transient AWS errors are retried this many times, with exponential backoff and jitter.
    max_retries = 8

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        services = self.app.services
        consumed: list[PayloadRef] = []
        try:
            resolved_args = services.codec.resolve(list(args), consumed)
            resolved_kwargs = services.codec.resolve(kwargs, consumed)
        except Exception as exc:
            if not is_transient(exc) or self.request.called_directly:
                raise
            raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc
        try:
            return super().__call__(*resolved_args, **resolved_kwargs)
        except Retry:
            consumed.clear()
            raise
        finally:
            if consumed and services.settings.delete_consumed_payloads:
                try:
                    services.claims.discard(consumed)
                except Exception:  # noqa: BLE001 - the lifecycle rule is the fallback
                    log.warning("could not delete %d consumed payload(s)", len(consumed))
