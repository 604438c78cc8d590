"""The base class of every cloudworker task.

It is where a task's arguments are checked, on both sides of the queue, by one
method (:meth:`CloudworkerTask.admit`): the client refuses what it can know is
bad before anything is sent, and the worker refuses it again before the pool
(:mod:`cloudworker.worker.admission`), since a message can come from any producer.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from celery import Signature, Task, chord
from celery.exceptions import ImproperlyConfigured, Retry
from celery.utils.saferepr import saferepr
from celery.utils.time import get_exponential_backoff_interval
from kombu.exceptions import EncodeError

from cloudworker import keys
from cloudworker.aws import is_transient
from cloudworker.codec import PayloadRef, loggable
from cloudworker.errors import CloudworkerError, InvalidArguments, InvalidInput, PayloadError
from cloudworker.results.finishing import redelivering

__all__ = ["CloudworkerTask", "sendable", "task_class", "upgrade_task"]

log = logging.getLogger(__name__)

#: Retries a task gets when fetching its claim-checked arguments meets a transient AWS
#: error (with exponential backoff and jitter), whatever its own ``max_retries`` (Celery's
#: default, 3, unless the task sets another) allows for its own failures.
TRANSIENT_RETRIES = 8


#: The parts of a task message's embed Celery reads from the request.
_CANVAS_PARTS = ("callbacks", "errbacks", "chain", "chord")


class CloudworkerTask(Task):  # type: ignore[misc]
    """Resolves claim-checked arguments in the pool process, and deletes them after.

    The worker's consumer decodes each task body in its event loop, where a
    download would stall every other message; so large arguments arrive as
    :class:`~cloudworker.codec.PayloadRef` and are fetched here, in the process that
    runs the task. Once the task has ended (succeeded, or failed for good) the
    payloads are deleted, unless ``CLOUDWORKER_DELETE_CONSUMED_PAYLOADS`` is off;
    a task that will be retried, or a worker that dies mid-task, leaves them for
    the next delivery. The bucket's lifecycle rule removes any left behind.
    """

    #: Bad input (and a payload that is missing, altered or not the task's own) is the
    #: caller's error: logged without a traceback, never retried.
    throws = (InvalidInput, PayloadError)
    #: The worker checks each message before Celery's own strategy (worker/admission.py).
    Strategy = "cloudworker.worker.admission:strategy"
    #: A success's message is deleted by the pool process once its result is stored
    #: (cloudworker/results/finishing.py, cloudworker/worker/request.py).
    Request = "cloudworker.worker.request:Request"
    #: The task's own check of its bound arguments (name -> value), which raises
    #: :class:`InvalidInput`; values may still be :class:`PayloadRef` on the worker's
    #: edge. Given as ``@app.task(argument_check=staticmethod(check))``.
    argument_check: Callable[[Mapping[str, Any]], None] | None = None

    _tracer: Callable[..., Any] | None = None

    @property
    def __trace__(self) -> Callable[..., Any] | None:
        """Celery's tracer of this task, handing the message back if its result is not
        stored (:func:`cloudworker.results.finishing.redelivering`). Celery sets it in
        the pool process (``build_tracer``); it stays ``None`` until then."""
        return self._tracer

    @__trace__.setter
    def __trace__(self, tracer: Callable[..., Any] | None) -> None:
        self._tracer = None if tracer is None else redelivering(tracer)

    def admit(self, args: Any, kwargs: Any) -> None:
        """Raise :class:`InvalidInput` unless ``args``/``kwargs`` fit this task.

        They must bind to the task's signature (unless the task says
        ``typing=False``, as in Celery); then the task's own
        :attr:`argument_check`, if any, sees them by name.
        """
        if not isinstance(args, (list, tuple)) or not isinstance(kwargs, Mapping):
            raise InvalidArguments(f"{self.name}: args must be a list and kwargs an object")
        if not self.typing:
            return
        try:
            bound = inspect.signature(self.run).bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidArguments(f"{self.name}: {exc}") from None
        if self.argument_check is not None:
            self.argument_check(bound.arguments)

    def apply_async(self, args: Any = None, kwargs: Any = None, *more: Any, **options: Any) -> Any:
        """Celery's ``apply_async``, refusing bad arguments before anything is sent."""
        self.admit(args or (), kwargs or {})
        return super().apply_async(args, kwargs, *more, **options)

    def update_state(
        self, task_id: str | None = None, state: str | None = None, meta: Any = None, **kwargs: Any
    ) -> None:
        """Celery's. A final state set here (``SUCCESS`` before the task returns, or any
        state for another task's id) is not a run's result: the run's own result, when
        it comes, replaces it in S3 (``CloudworkerBackend._standing``)."""
        super().update_state(task_id, state, meta, by_update=True, **kwargs)

    def on_replace(self, sig: Any) -> Any:
        """Celery's, with the replacement answering where the replaced task would have.

        The replacement's last step takes the replaced task's id, and its caller
        waits for that id in its own response queue; but Celery freezes the
        replacement here, in the worker, so that step would answer to the worker's
        queue and the caller would find the result in S3 only after a whole long
        poll without news (``wait_seconds``).
        """
        reply_to, task_id = self.request.reply_to, self.request.id
        if reply_to and task_id:
            for node in _signatures(sig):
                if node.options.get("task_id") == task_id:
                    node.options["reply_to"] = reply_to
        return super().on_replace(sig)

    def _resolve_canvas(self, consumed: list[PayloadRef], under: str) -> None:
        """Fetch the parts of the canvas (the rest of a chain, callbacks, a chord) that
        were too large to travel inline, before Celery reads them after the task."""
        request, codec = self.request, self.app.services.codec
        for name in _CANVAS_PARTS:
            value = getattr(request, name, None)
            if isinstance(value, PayloadRef):
                setattr(request, name, codec.resolve(value, consumed, under=under))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        services = self.app.services
        consumed: list[PayloadRef] = []
        # A task resolves (and later deletes) only what its own client checked in.
        task_id = self.request.id
        under = keys.task_payload_prefix(task_id) if task_id else keys.PAYLOADS
        try:
            resolved_args = services.codec.resolve(list(args), consumed, under=under)
            resolved_kwargs = services.codec.resolve(kwargs, consumed, under=under)
            self._resolve_canvas(consumed, under)
        except (ClientError, BotoCoreError) as exc:
            if not is_transient(exc) or self.request.called_directly:
                # Refused for good (access denied...): the caller's error names it.
                raise PayloadError(f"a claim-checked argument could not be read: {exc}") from exc
            # Celery's own retry_backoff: doubling from 1 s up to a minute, full jitter.
            countdown = get_exponential_backoff_interval(
                factor=1, retries=self.request.retries, maximum=60, full_jitter=True
            )
            limit = self.max_retries
            if limit is not None:  # None: the task retries for ever, and so does this
                limit = max(limit, TRANSIENT_RETRIES)
            raise self.retry(exc=exc, countdown=countdown, max_retries=limit) from exc
        try:
            if consumed:  # what came from S3 is checked like what came inline
                self.admit(resolved_args, resolved_kwargs)
            result = super().__call__(*resolved_args, **resolved_kwargs)
            try:
                saferepr(result, self.resultrepr_maxsize)  # as Celery's log will
            except ValueError:  # an integer past the int/str conversion limit
                result = loggable(result)
            return result
        except Retry:
            consumed.clear()
            raise
        finally:
            if consumed and services.settings.delete_consumed_payloads:
                try:
                    services.claims.discard(consumed)
                except Exception:  # noqa: BLE001 - the lifecycle rule is the fallback
                    log.warning("could not delete %d consumed payload(s)", len(consumed))


def _signatures(sig: Any) -> Any:
    """``sig`` and every signature inside it (chain steps, group members, chord parts)."""
    yield sig
    tasks = getattr(sig, "tasks", None)
    if isinstance(tasks, Signature):  # a chord's header given as a group
        tasks = [tasks]
    for child in tasks if isinstance(tasks, (list, tuple)) else ():
        if isinstance(child, Signature):
            yield from _signatures(child)
    body = sig.kwargs.get("body") if isinstance(sig, chord) else None
    if isinstance(body, Signature):
        yield from _signatures(body)


def sendable(exc: EncodeError) -> CloudworkerError:
    """The typed error behind kombu's ``EncodeError`` (kombu wraps whatever the codec raised)."""
    cause = exc.args[0] if exc.args else exc.__context__
    if isinstance(cause, CloudworkerError):
        return cause
    return InvalidArguments(f"the arguments cannot be sent as JSON: {cause}")


#: Celery's own worker classes, which a task's base may leave as they are.
_CELERY_STRATEGY = Task.Strategy
_CELERY_REQUEST = Task.Request
_UPGRADED: dict[type, type] = {}


def task_class(base: type) -> type:
    """``base`` made a cloudworker task's class: :class:`CloudworkerTask` mixed in first.

    Any ``celery.Task`` subclass (a user's ``base=``, Celery's own) gets what
    every cloudworker task has: claim-checked arguments, admission, background
    finishing. Its ``throws`` are kept with cloudworker's. A base that sets its
    own ``Strategy`` or ``Request`` cannot have cloudworker's worker side: it is
    refused here, when the task is registered, with the reason.
    """
    if issubclass(base, CloudworkerTask):
        return base
    found = _UPGRADED.get(base)
    if found is not None:
        return found
    if not issubclass(base, Task):
        raise ImproperlyConfigured(f"a task's base must be a celery.Task subclass, not {base!r}")
    for attribute, celery_default in (("Strategy", _CELERY_STRATEGY), ("Request", _CELERY_REQUEST)):
        own = getattr(base, attribute)
        if own != celery_default:
            raise ImproperlyConfigured(
                f"{base.__module__}.{base.__qualname__} sets its own {attribute} ({own!r}); "
                f"cloudworker's worker needs its own ({getattr(CloudworkerTask, attribute)!r}): "
                f"subclass that one instead"
            )
    throws = tuple(dict.fromkeys((*CloudworkerTask.throws, *(getattr(base, "throws", ()) or ()))))
    found = _UPGRADED[base] = type(
        base.__name__,
        (CloudworkerTask, base),
        {"__module__": base.__module__, "__qualname__": base.__qualname__, "throws": throws},
    )
    return found


def upgrade_task(task: Any) -> None:
    """Make a task already made (an instance) a cloudworker task, in place."""
    if not isinstance(task, CloudworkerTask):
        task.__class__ = task_class(type(task))
