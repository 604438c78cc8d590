"""The base class of every cloudworker task."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import Retry

from tasks.codec import PayloadRef
from tasks.errors import InvalidInput

__all__ = ["CloudworkerTask"]

log = logging.getLogger(__name__)


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

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        services = self.app.services
        consumed: list[PayloadRef] = []
        resolved_args = services.codec.resolve(list(args), consumed)
        resolved_kwargs = services.codec.resolve(kwargs, consumed)
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
