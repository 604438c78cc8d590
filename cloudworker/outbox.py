"""Requests that can share one SQS call, sent together by one background thread.

A worker process that finishes tasks quickly has, at any moment, several
notices for the same response queue and several messages to delete from the
same task queue. Sent one by one they cost a request each; SQS takes up to ten
in one ``SendMessageBatch`` or ``DeleteMessageBatch``. An :class:`Outbox` holds
what is put into it, per destination, and one thread sends it: whatever arrived
while the previous call was in flight goes in the next one, so a lone item is
sent at once (``linger`` 0) and a busy process batches by itself, with no timer
on the answer's path. An item that may wait (an acknowledgement: the message
stays hidden for the visibility timeout meanwhile) can be given a ``linger``,
the longest it waits for others to join it.

The ``send`` callable takes one destination and every item for it; it splits
them into requests of the size SQS takes. Each :meth:`Outbox.put` returns a
future that says when its item went out, or why not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

__all__ = ["Outbox"]

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Outbox(Generic[K, V]):
    """Items per destination, sent in batches by one thread started on the first put."""

    def __init__(
        self,
        send: Callable[[K, Sequence[V]], None],
        *,
        name: str,
        linger: float = 0.0,
        batch: int = 10,
    ) -> None:
        self._send = send
        self._name = name
        self._linger = linger
        self._batch = batch
        self._ready = threading.Condition()
        self._waiting: dict[K, list[tuple[V, Future[None]]]] = {}
        self._oldest = 0.0  # monotonic time of the oldest waiting item
        self._closed = False
        self._thread: threading.Thread | None = None

    def put(self, destination: K, item: V) -> Future[None]:
        """Queue ``item`` for ``destination``; the future is done once it was sent."""
        future: Future[None] = Future()
        with self._ready:
            if self._closed:
                raise RuntimeError(f"{self._name} is closed")
            if not self._waiting:
                self._oldest = time.monotonic()
            self._waiting.setdefault(destination, []).append((item, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._ready.notify_all()
        return future

    def close(self, timeout: float | None = None) -> None:
        """Send what is waiting, then stop the thread (waiting at most ``timeout`` s)."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            for destination, entries in taken.items():
                self._deliver(destination, entries)

    def _take(self) -> dict[K, list[tuple[V, Future[None]]]] | None:
        """Wait until something is due, and take everything waiting (None: closed and empty)."""
        with self._ready:
            while True:
                if not self._waiting:
                    if self._closed:
                        return None
                    self._ready.wait()
                    continue
                due = self._oldest + self._linger - time.monotonic()
                full = any(len(entries) >= self._batch for entries in self._waiting.values())
                if due <= 0 or full or self._closed:
                    taken, self._waiting = self._waiting, {}
                    return taken
                self._ready.wait(due)

    def _deliver(self, destination: K, entries: list[tuple[V, Future[None]]]) -> None:
        try:
            self._send(destination, [item for item, _ in entries])
        except Exception as exc:  # noqa: BLE001 - each caller learns it from its future
            for _, future in entries:
                future.set_exception(exc)
        else:
            for _, future in entries:
                future.set_result(None)
