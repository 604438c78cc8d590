"""Warm shutdown with a grace period: held work goes back at once, running work gets time.

A worker leaves the fleet by SIGTERM: systemd's stop, which a scale-in runs
through the group's lifecycle hook (deploy/aws/drain.py). Celery's warm
shutdown then stops consuming and waits, without limit, for the running tasks;
meanwhile the consumer's visibility heartbeat has stopped with the consumer,
and what the worker received but had not started sits in flight until its
visibility timeout. :class:`ShutdownGrace`, a worker bootstep, bounds and
completes that warm shutdown:

1. the messages of tasks received but not started go back to SQS at once
   (``ChangeMessageVisibility`` 0 through kombu's reject-with-requeue, never a
   copy), so other workers take them now; so do the messages a long poll sent
   before the stop still brings (its answer is read, then handed back), which
   the stopped event loop would otherwise leave hidden for the visibility timeout;
2. the running tasks' messages stay hidden (their visibility is extended on
   the heartbeat's schedule), so no other worker runs them while they finish,
   and each is acknowledged as it finishes;
3. once ``shutdown_grace`` seconds have passed, tasks still running are
   cancelled by Celery's own cold shutdown (SIGQUIT to this process), which
   leaves their messages unacknowledged; the channel hands those back at
   once as it closes, and another worker runs them from the start.

A cold shutdown (SIGQUIT, a second Ctrl+C) skips all of this, as Celery's does.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from celery import bootsteps
from celery.worker import state

from cloudworker.settings import Settings
from cloudworker.worker.visibility import extend_visibility

if TYPE_CHECKING:
    from cloudworker.services import Services

__all__ = ["ShutdownGrace"]

log = logging.getLogger(__name__)


class ShutdownGrace(bootsteps.StartStopStep):  # type: ignore[misc]
    """Hands held messages back when the worker starts to stop, and bounds the wait."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._services: Services = parent.app.services
        self._settings: Settings = self._services.settings

    def close(self, worker: Any) -> None:
        """The worker begins to stop (Celery's blueprint closes its steps first)."""
        if state.should_terminate is not None:
            return  # a cold shutdown: Celery cancels everything itself
        channels = _channels_of(worker)
        for channel in channels:
            channel.handing_back = True
        handed_back = hand_back_waiting()
        if handed_back:
            log.info("shutting down: %d waiting task(s) handed back", handed_back)
        receives_done = threading.Event()
        keeper = threading.Thread(
            target=keep_running_tasks,
            args=(self._services, receives_done),
            name="cloudworker-shutdown-grace",
            daemon=True,
        )
        keeper.start()
        try:
            for channel in channels:
                channel.finish_receives(self._settings.wait_seconds + 5)
        finally:
            receives_done.set()


def _channels_of(worker: Any) -> list[Any]:
    """The worker's SQS channels (cloudworker/sqs/), through which it receives its tasks."""
    connection = getattr(getattr(worker, "consumer", None), "connection", None)
    transport = getattr(connection, "transport", None)
    return [
        channel
        for channel in list(getattr(transport, "channels", None) or [])
        if hasattr(channel, "finish_receives")
    ]


def _snapshot(requests: Any) -> list[Any]:
    """A copy of one of Celery's request sets, which the main thread changes."""
    while True:
        try:
            return list(requests)
        except RuntimeError:  # changed size during the copy: take it again
            continue


def hand_back_waiting() -> int:
    """Give back every received message whose task has not started; how many."""
    active = {id(request) for request in _snapshot(state.active_requests)}
    waiting = [
        request
        for request in _snapshot(state.reserved_requests)
        if id(request) not in active and not request.acknowledged
    ]
    for request in waiting:
        message = request.message
        if getattr(message, "channel", None) is not None:
            message.channel.handing_back = True
        # Not request.reject(): Celery defers that to the event loop, which has
        # stopped; kombu's reject goes to the channel now.
        if not message.acknowledged:
            message.reject_log_error(log, (Exception,), requeue=True)
        request.acknowledged = True
    return len(waiting)


def running_tasks() -> list[Any]:
    """The requests whose tasks run now and whose messages are not yet acknowledged."""
    return [request for request in _snapshot(state.active_requests) if not request.acknowledged]


def keep_running_tasks(
    services: Services, receives_done: threading.Event, *, signum: int = signal.SIGQUIT
) -> None:
    """Keep the running tasks' messages hidden for the grace period, then cut it short.

    Runs in a thread while the main thread first reads the last receive's answer,
    then waits for the pool; it ends when no task runs any more, or by sending
    ``signum`` (Celery's cold shutdown) to this process. The grace period never
    ends while the main thread still reads that answer (at most one long poll):
    until it is back with the pool, a task that has finished still looks running.
    """
    settings = services.settings
    grace = settings.shutdown_grace
    timeout = settings.visibility_timeout
    interval = max(1.0, timeout / 3)
    deadline = time.monotonic() + grace
    settled: float | None = None
    while True:
        running = running_tasks()
        if not running:
            return
        if settled is None and receives_done.is_set():
            # The main thread is back with the pool: it takes in, within moments,
            # the results of tasks that finished while it was reading.
            settled = time.monotonic() + SETTLE_SECONDS
            deadline = max(deadline, settled)
        remaining = deadline - time.monotonic()
        if remaining <= 0 and settled is not None:
            break
        if timeout > 0:
            extend_visibility(services.client("sqs"), running, timeout)
        time.sleep(min(interval, max(remaining, 0.0) or 1.0))
    log.warning(
        "shutdown grace of %g s is over: handing back %d running task(s): %s",
        grace,
        len(running),
        ", ".join(sorted(str(request.id) for request in running)),
    )
    os.kill(os.getpid(), signum)


#: Seconds the main thread gets, once the last receive is answered, to take in
#: the results of tasks that finished meanwhile.
SETTLE_SECONDS = 2.0
