"""The base class of every cloudworker task."""

from __future__ import annotations

from typing import Any

from celery import Task

from tasks.errors import InvalidInput

__all__ = ["CloudworkerTask"]


class CloudworkerTask(Task):  # type: ignore[misc]
    """Resolves claim-checked arguments in the pool process, just before running.

    The worker's consumer decodes each task body in its event loop, where a
    download would stall every other message; so large arguments arrive as
    :class:`~tasks.codec.PayloadRef` and are fetched here, in the process that
    runs the task.
    """

    #: Bad input is the caller's error: logged without a traceback, never retried.
    throws = (InvalidInput,)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        claims = self.app.services.claims
        return super().__call__(*claims.resolve(list(args)), **claims.resolve(kwargs))
