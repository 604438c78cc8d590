"""The worker's request of every cloudworker task (Celery's ``celery/worker/request.py``).

Celery's, with two changes, each for a path a message takes in the worker's
main process:

* a success stored in the background (:mod:`cloudworker.results.finishing`) is
  acknowledged by the pool process once its result is in S3: this request
  takes the message out of the prefetch window without deleting it;
* a refusal raised before the pool runs the task gives back the pool slot,
  answers the caller and dead-letters the message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery.exceptions import TaskRevokedError
from celery.worker.request import Request as CeleryRequest

from cloudworker.errors import InvalidMessage
from cloudworker.queues import DELETED_ELSEWHERE, REASON_KEY
from cloudworker.results.finishing import finished_in_background
from cloudworker.worker.admission import answer

if TYPE_CHECKING:
    from cloudworker.settings import Settings

__all__ = ["Request"]

log = logging.getLogger(__name__)


class Request(CeleryRequest):  # type: ignore[misc]
    """The worker's request, which leaves a background success's ack to the pool process.

    Celery makes a subclass of this per task (``create_request_cls``) whose
    ``on_success`` acknowledges; :meth:`__init_subclass__` wraps it to note that
    the task succeeded, so that :meth:`acknowledge` knows the message is to be
    deleted by the pool process, not here.
    """

    _succeeded = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        on_success = cls.__dict__.get("on_success")
        if on_success is not None:
            cls.on_success = _noting_success(on_success)

    def execute_using_pool(self, pool: Any, **kwargs: Any) -> Any:
        """Celery's; a refusal raised before the pool runs the task gives back its slot.

        Celery's worker gives back the pool slot it took for a request only when
        this raises ``TaskRevokedError`` (``WorkController._process_task``): any
        other error here (a header Celery's revocation check could not read, say)
        kept the slot, and once it had kept as many as the pool has processes the
        worker held every later task for ever. Such a request is refused as a
        broken message is: its caller gets :class:`~cloudworker.errors.InvalidMessage`
        with the reason, and the message goes to the dead-letter queue with it.
        """
        try:
            return super().execute_using_pool(pool, **kwargs)
        except TaskRevokedError:
            raise
        except Exception as exc:
            reason = " ".join(f"refused before it ran: {type(exc).__name__}: {exc}".split())
            log.warning("task %s[%s] %s", self.task_name, self.id, reason[:500])
            try:
                answer(
                    self.task.backend, self.message, InvalidMessage(reason[:500]), self._settings
                )
            except Exception as error:  # noqa: BLE001 - the dead letter still says why
                log.warning("could not answer the caller of a refused task: %s", error)
            self.message.delivery_info[REASON_KEY] = reason[:500]
            self.reject(requeue=False)
            raise TaskRevokedError(self.id) from exc

    @property
    def _settings(self) -> Settings:
        settings: Settings = self.task.app.services.settings
        return settings

    def acknowledge(self) -> None:
        settings = self.task.app.services.settings
        if self._succeeded and finished_in_background(self.task, self, settings) is not None:
            self.message.delivery_info[DELETED_ELSEWHERE] = True
        super().acknowledge()


def _noting_success(on_success: Callable[..., Any]) -> Callable[..., Any]:
    def noted(self: Request, failed__retval__runtime: Any, **kwargs: Any) -> Any:
        self._succeeded = not failed__retval__runtime[0]
        return on_success(self, failed__retval__runtime, **kwargs)

    return noted
