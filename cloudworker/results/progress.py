"""A running task's states (STARTED, RETRY, ``update_state``'s): kept and pushed, throttled.

A state that is not final is written to S3 (``results/<id>/state.json``, the
latest wins) and pushed to the caller's response queue, but not at once: it
waits ``interval`` seconds (``CLOUDWORKER_STATE_INTERVAL``), and states that
come meanwhile replace it. So each task costs at most one PUT and one
SendMessage per interval however often it reports, and a task that ends within
the interval costs nothing extra: its result supersedes what was waiting, which
is dropped. That is what makes ``task_track_started`` affordable by default.

Only a task's own states wait (the worker running it reports them); a state
stored from anywhere else (``backend.store_result`` in a client) is written at
once by the backend. States are written by one daemon thread per process, made
on first use, so a forked pool process makes its own.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["StateWriter"]

log = logging.getLogger(__name__)

#: Writes one state: (task id, reply_to, state, record).
Write = Callable[[str, "str | None", str, str], None]


@dataclass
class _Waiting:
    due: float
    reply_to: str | None
    state: str
    record: str


class StateWriter:
    """Writes the latest state of each running task, at most once per ``interval``."""

    def __init__(self, write: Write, interval: float) -> None:
        self._write = write
        self._interval = interval
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._waiting: dict[str, _Waiting] = {}
        self._due: list[tuple[float, str]] = []
        self._thread: threading.Thread | None = None
        #: States handed in, and states written (for the cost figures and the tests).
        self.updates = 0
        self.writes = 0

    def update(self, task_id: str, reply_to: str | None, state: str, record: str) -> None:
        """Note ``task_id``'s latest state; it is written within ``interval`` seconds."""
        with self._lock:
            self.updates += 1
            waiting = self._waiting.get(task_id)
            if waiting is not None:
                waiting.reply_to, waiting.state, waiting.record = reply_to, state, record
                return
            due = time.monotonic() + self._interval
            self._waiting[task_id] = _Waiting(due, reply_to, state, record)
            heapq.heappush(self._due, (due, task_id))
            self._ensure_thread()
            self._wake.notify()

    def finish(self, task_id: str) -> None:
        """``task_id`` ended: its waiting state is superseded by its result."""
        with self._lock:
            self._waiting.pop(task_id, None)

    def flush(self) -> None:
        """Write every waiting state now (at worker shutdown, and in tests)."""
        with self._lock:
            ready = list(self._waiting.items())
            self._waiting.clear()
            self._due.clear()
        for task_id, waiting in ready:
            self._write_one(task_id, waiting)

    def _ensure_thread(self) -> None:
        # Called with the lock held.
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="cloudworker-states", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._due or self._due[0][0] > time.monotonic():
                    timeout = None if not self._due else self._due[0][0] - time.monotonic()
                    self._wake.wait(timeout)
                due, task_id = heapq.heappop(self._due)
                waiting = self._waiting.get(task_id)
                if waiting is None or waiting.due != due:
                    continue  # finished, or this is an earlier run of the same task id
                del self._waiting[task_id]
            self._write_one(task_id, waiting)

    def _write_one(self, task_id: str, waiting: _Waiting) -> None:
        try:
            self._write(task_id, waiting.reply_to, waiting.state, waiting.record)
        except Exception:
            log.exception("could not write state %s of task %s", waiting.state, task_id)
        else:
            with self._lock:
                self.writes += 1
