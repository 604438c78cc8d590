"""Finishing a successful task in the background: its result's PUT, its notice, its ack.

On AWS an S3 PUT takes tens of milliseconds. A pool process that waits for
its result's PUT before it takes the next task spends most of a short task
idle. So, for a task that succeeded, the pool process hands the result to a
thread of its own (:class:`ResultFinisher`) and goes on; the thread stores the
record (the notice goes beside it, as before, :mod:`cloudworker.results.backend`) and only
then deletes the task's message from SQS. The rule stands that a task is
acknowledged only once its result is durable: the worker's main process, told
that the task succeeded, takes the message out of its prefetch window without
deleting it (:class:`~cloudworker.worker.request.Request`, and the transport's
``basic_ack``), and the deletion comes from the pool process once the PUT is done. Deletions, and
notices to the same response queue, that are ready together share a batch
request (:class:`~cloudworker.outbox.Outbox`).

Which tasks (:func:`finished_in_background`, the one test both processes make):
a success, of a task that acknowledges late and keeps its result, received from
SQS, not run eagerly, and not a chord's header part (the part that completes
the chord reads its siblings' results from S3 at once, so a part stores before
it counts itself, as before). Failures, retries, rejections and revocations are
stored and acknowledged as before, where Celery handles them.

What can go wrong, and what then happens:

* The pool process dies before the thread is done: the message was not deleted,
  SQS delivers it again after the visibility timeout, the task runs again and
  the first result stored stands (a conditional PUT).
* The PUT fails (after boto3's retries): logged, the message is not deleted, and
  it comes back the same way.
* A pool process that exits in order (``worker_max_tasks_per_child``, a warm
  shutdown) first finishes what it holds (``worker_process_shutdown``).
* S3 is slow: at most ``_MAX_PENDING`` results per process wait for it; beyond
  that the pool process waits for a slot, as it waited for every PUT before.

``CLOUDWORKER_BACKGROUND_RESULTS=false`` turns this off (both processes read
it); every result is then stored by the pool process before it returns.

A result stored by the pool process itself (a failure, or any result with the
background off) that S3 refuses is handled the same way: Celery would take the
error for a crash of the worker (an ERROR with a traceback) and delete the
message, leaving no result. :func:`redelivering` wraps each task's tracer
instead: the refusal is logged as a warning, the chord count and the errbacks
that would follow the store are left to the next run (:func:`unstored`), and the
message is rejected with requeue (Celery's ``Reject``), so SQS delivers it again
at once; after five receives the redrive policy dead-letters it.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from billiard.einfo import ExceptionInfo
from celery import signals
from celery import states as celery_states
from celery.app.task import get_actual_ignore_result
from celery.app.trace import TraceInfo
from celery.exceptions import Reject

from cloudworker.outbox import Outbox
from cloudworker.queues import QueueService

if TYPE_CHECKING:
    from cloudworker.settings import Settings

__all__ = [
    "ResultFinisher",
    "finished_in_background",
    "redelivering",
    "stored_or_redelivered",
    "unstored",
]

log = logging.getLogger(__name__)

#: Threads per pool process that store results (each waits on one S3 PUT).
_THREADS = 8
#: Most results per pool process waiting for S3 before the pool process waits too.
_MAX_PENDING = 32
#: Longest an acknowledgement waits for others to share its DeleteMessageBatch. The
#: message stays hidden meanwhile; nobody waits on it.
_ACK_LINGER = 0.2
#: How long a pool process that exits waits for its results to be stored.
_CLOSE_TIMEOUT = 30.0
#: The finishers made in this process (a forked child's copies are its parent's).
_finishers: weakref.WeakSet[ResultFinisher] = weakref.WeakSet()


@dataclass
class _Run:
    """A task a worker's tracer is running, and why its result was not stored, if so."""

    task_id: str
    unstored: str | None = None


_RUN: ContextVar[_Run | None] = ContextVar("cloudworker_traced_run", default=None)


def stored_or_redelivered(task_id: str, store: Callable[[], None]) -> None:
    """Run ``store`` (a final result's PUT); in a worker's run of ``task_id``, a refusal
    marks the run for redelivery (:func:`redelivering`) instead of raising."""
    run = _RUN.get()
    if run is None or run.task_id != task_id:
        store()
        return
    try:
        store()
    except Exception as exc:  # noqa: BLE001 - whatever S3 said, the message comes back
        log.warning(
            "task %s: its result could not be stored (%s); SQS will deliver it again",
            task_id,
            exc,
        )
        run.unstored = " ".join(str(exc).split())[:500]


def unstored(task_id: str | None) -> bool:
    """Whether this is a worker's run of ``task_id`` whose result S3 refused: what
    follows the store (a chord's count, the errbacks) waits for the redelivery."""
    run = _RUN.get()
    return run is not None and run.task_id == task_id and run.unstored is not None


def redelivering(tracer: Callable[..., Any]) -> Callable[..., Any]:
    """A task's tracer (Celery's ``build_tracer``) whose run, if its result could not be
    stored, ends as Celery's ``Reject(requeue=True)``: the worker hands the message back."""

    def traced(uuid: str, args: Any, kwargs: Any, request: Any = None) -> Any:
        run = _Run(uuid)
        token = _RUN.set(run)
        try:
            outcome = tracer(uuid, args, kwargs, request)
        finally:
            _RUN.reset(token)
        if run.unstored is None:
            return outcome
        reject = Reject(f"its result could not be stored: {run.unstored}", requeue=True)
        try:
            raise reject
        except Reject:
            einfo = ExceptionInfo(internal=True)
        return einfo, TraceInfo(celery_states.REJECTED, reject), outcome[2], repr(reject)

    traced.__wrapped__ = tracer  # type: ignore[attr-defined]
    return traced


def finished_in_background(task: Any, request: Any, settings: Settings) -> tuple[str, str] | None:
    """Where to delete ``request``'s message from, if a success of it is finished here.

    ``(queue URL, receipt handle)`` when a success of ``request`` is stored, and its
    message deleted, by a thread of the pool process; None when it is done as in
    Celery. ``request`` is the task's context in the pool process, or the worker's
    request in the main process: both make this same test.
    """
    if not settings.background_results or task is None:
        return None
    if getattr(request, "is_eager", False) or getattr(request, "chord", None):
        return None
    if not task.acks_late or get_actual_ignore_result(task, request):
        return None
    return _sqs_location(request)


def _sqs_location(request: Any) -> tuple[str, str] | None:
    """The queue URL and receipt handle of the SQS message behind ``request``."""
    message = getattr(request, "message", None)
    if message is not None:  # the worker's Request, in the main process
        info, receipt = message.delivery_info or {}, message.delivery_tag
    else:  # the task's Context, in the pool process: the message's properties
        properties = getattr(request, "properties", None) or {}
        info, receipt = properties.get("delivery_info") or {}, properties.get("delivery_tag")
    url = info.get("sqs_queue")
    if isinstance(url, str) and isinstance(receipt, str):
        return url, receipt
    return None


class ResultFinisher:
    """Stores results on threads of this process, then deletes their tasks' messages."""

    def __init__(self, queues: Callable[[], QueueService]) -> None:
        self._queues = queues
        self._executor = ThreadPoolExecutor(_THREADS, thread_name_prefix="cloudworker-result")
        self._slots = threading.BoundedSemaphore(_MAX_PENDING)
        self._lock = threading.Lock()
        self._jobs: dict[str, Future[None]] = {}
        self._deletes: Outbox[str, str] = Outbox(
            self._delete_many, name="cloudworker-acks", linger=_ACK_LINGER
        )
        self._pid = os.getpid()
        _finishers.add(self)

    def submit(self, task_id: str, finish: Callable[[], None]) -> None:
        """Run ``finish`` (store ``task_id``'s result) on a thread; wait only for a slot."""
        self._slots.acquire()
        job = self._executor.submit(finish)
        job.add_done_callback(lambda _: self._slots.release())
        with self._lock:
            self._jobs[task_id] = job

    def acknowledge_after(self, task_id: str, url: str, receipt: str) -> None:
        """Delete the message once ``task_id``'s result is stored (at once if none is pending)."""
        with self._lock:
            job = self._jobs.pop(task_id, None)
        if job is None:
            self._delete(url, receipt)
        else:
            job.add_done_callback(partial(self._acknowledge_if_stored, task_id, url, receipt))

    def discard(self, task_id: str) -> None:
        """Forget ``task_id``'s pending result, if any (its message is acknowledged elsewhere)."""
        with self._lock:
            self._jobs.pop(task_id, None)

    def close(self, timeout: float = _CLOSE_TIMEOUT) -> None:
        """Store every pending result and send every acknowledgement, then stop."""
        self._executor.shutdown(wait=True)
        self._deletes.close(timeout)

    def _acknowledge_if_stored(
        self, task_id: str, url: str, receipt: str, job: Future[None]
    ) -> None:
        exc = job.exception()
        if exc is not None:
            log.warning(
                "task %s: its result could not be stored (%s); SQS will deliver it again",
                task_id,
                exc,
            )
            return
        self._delete(url, receipt)

    def _delete(self, url: str, receipt: str) -> None:
        def settle(deleted: Future[None]) -> None:
            exc = deleted.exception()
            if exc is not None:
                log.warning("could not delete an acknowledged message: %s", exc)

        self._deletes.put(url, receipt).add_done_callback(settle)

    def _delete_many(self, url: str, receipts: Sequence[str]) -> None:
        self._queues().delete_messages(url, receipts)


def _on_postrun(sender: Any = None, task_id: str = "", state: str = "", **kwargs: Any) -> None:
    """In the process that ran the task: delete a background success's message once stored."""
    services = getattr(getattr(sender, "app", None), "services", None)
    if services is None:
        return
    location = finished_in_background(sender, sender.request, services.settings)
    if location is None:  # nothing was handed to a thread: Celery acknowledges it
        return
    finisher: ResultFinisher = services.finisher
    if state == celery_states.SUCCESS:
        finisher.acknowledge_after(task_id, *location)
    else:  # an outcome after a stored success (a handler raised): the main process acks
        finisher.discard(task_id)


def _on_process_exit(**_: Any) -> None:
    """A pool process (or a solo worker) that exits stores what it holds first."""
    for finisher in list(_finishers):
        if finisher._pid == os.getpid():
            finisher.close()


signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid=f"{__name__}.postrun")
signals.worker_process_shutdown.connect(
    _on_process_exit, weak=False, dispatch_uid=f"{__name__}.process_exit"
)
signals.worker_shutdown.connect(_on_process_exit, weak=False, dispatch_uid=f"{__name__}.exit")
