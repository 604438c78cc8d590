"""Submitting many inputs at once: batched sends, a progress bar, a summary.

Every input becomes one task. The messages are sent with SQS batch sends (ten
per request, :func:`tasks.batch_sends`), then the answers are
collected from this process's response queue as they arrive. A bad input (one
the client cannot read, the sender refuses, or the worker refuses) is recorded
and the batch goes on; the caller decides the exit status from the items.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from celery import states
from celery.exceptions import TimeoutError as CeleryTimeoutError

from cloudworker.errors import InvalidInput
from tasks import batch_sends

__all__ = ["Item", "Progress", "Report", "run"]


@dataclass
class Item:
    """One input of a batch and what became of it."""

    label: str
    #: Reads the input and returns the task's arguments; raises InvalidInput if it is bad.
    load: Callable[[], tuple[Any, ...]]
    value: Any = None
    error: str | None = None


@dataclass
class Report:
    """What a batch cost and how it went."""

    items: list[Item] = field(default_factory=list)
    messages: int = 0
    requests: int = 0

    @property
    def bad(self) -> list[Item]:
        return [item for item in self.items if item.error is not None]

    def summary(self) -> str:
        done = len(self.items) - len(self.bad)
        saved = self.messages - self.requests
        return (
            f"{len(self.items)} inputs: {done} done, {len(self.bad)} bad; "
            f"{self.messages} tasks sent in {self.requests} SQS requests "
            f"({saved} saved by batching)"
        )


class Progress:
    """A one-line progress bar on a terminal; silent when the stream is not one."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, enabled: bool | None = None):
        self.total = total
        self.done = 0
        self._stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self._suffixed = False

    def advance(self) -> None:
        self.done += 1
        self._draw("")

    def report(self, label: str, meta: dict[str, Any]) -> None:
        """A running task's state beside the bar (``current/total`` when its task reports them).

        Tasks report with ``update_state(state=..., meta={"current": n, "total": m})``;
        the states arrive pushed on the response queue (``get(on_message=...)``).
        """
        state = meta.get("status")
        if state in states.READY_STATES:
            return
        info = meta.get("result")
        detail = ""
        if isinstance(info, dict):
            current, total = info.get("current"), info.get("total")
            if isinstance(current, int | float) and isinstance(total, int | float) and total:
                detail = f" {current:g}/{total:g}"
        self._draw(f"  {label}: {state}{detail}")

    def _draw(self, suffix: str) -> None:
        if self.enabled:
            filled = 30 * self.done // max(self.total, 1)
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total}"
            # Clear to the end of the line when a state was, or is, shown after the bar.
            clear = "\x1b[K" if suffix or self._suffixed else ""
            self._suffixed = bool(suffix)
            self._stream.write(f"\r{bar}{suffix}{clear}")
            self._stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._stream.write("\n")
            self._stream.flush()


def run(task: Any, items: Sequence[Item], *, timeout: float, progress: Progress) -> Report:
    """Send one ``task`` per item, wait for every answer, return the report."""
    report = Report(list(items))
    sent = []
    with batch_sends() as batch:
        for item in report.items:
            # The sender may refuse an input too (e.g. LimitExceeded before
            # anything is sent): that item is bad, the others still run.
            try:
                sent.append((item, task.apply_async(item.load())))
            except InvalidInput as exc:
                item.error = str(exc)
                progress.advance()
    report.messages, report.requests = batch.messages, batch.requests
    deadline = time.monotonic() + timeout
    try:
        for item, result in sent:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CeleryTimeoutError("The operation timed out.")
            try:
                item.value = result.get(
                    timeout=remaining,
                    on_message=lambda meta, label=item.label: progress.report(label, meta),
                )
            except InvalidInput as exc:
                item.error = str(exc)
            progress.advance()
    finally:
        progress.close()
    return report
