"""Counting AWS requests: client side through botocore events, server side from moto's log.

Why two counts: the server count (every HTTP request moto answered) is the true cost of a
task for the whole system, worker included, but cannot say which call is which; the client
count names every operation but sees only the calling process. Together they show where a
system's requests go.

Client side: every boto3/botocore client, whoever builds it (kombu's SQS channel makes its
own ``boto3.Session``, Celery's S3 backend another, cloudworker a third), gets its event
emitter from a fresh ``botocore.session.Session``. So the hooks are registered in
``Session.__init__`` itself (:func:`install_client_counter`), which reaches all of them as long
as it runs before the first client is made. ``before-call`` fires once per API call,
``before-send`` once per HTTP attempt (retries included).

Server side: moto's werkzeug server logs one line per request when it answers, e.g.
``127.0.0.1 - - [25/Nov/2026 04:14:53] "POST / HTTP/1.1" 200 -``; the lines appended to
``moto.log`` between two byte offsets are the requests of that window.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import botocore.session

__all__ = [
    "ClientCounter",
    "count_log_requests",
    "idle_rate",
    "install_client_counter",
    "log_offset",
]

#: One request line of werkzeug's access log. Non-2xx lines are wrapped in ANSI colour
#: codes (``"\x1b[33mHEAD /bucket/key HTTP/1.1\x1b[0m" 404``), which must still count.
REQUEST_LINE = re.compile(
    rb'^\S+ - - \[[^\]]*\] "(?:\x1b\[[0-9;]*m)*'  # address, date, colour
    rb'([A-Z]+) (\S+) HTTP/[0-9.]+(?:\x1b\[[0-9;]*m)*" \d{3} '  # request line and status
)


class ClientCounter:
    """API calls and HTTP attempts of every botocore client in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.sends: Counter[str] = Counter()

    def on_call(self, event_name: str = "", **_: Any) -> None:
        # event_name is "before-call.<service>.<Operation>".
        with self._lock:
            self.calls[event_name.partition(".")[2]] += 1

    def on_send(self, event_name: str = "", **_: Any) -> None:
        with self._lock:
            self.sends[event_name.partition(".")[2]] += 1

    def reset(self) -> None:
        """Forget what was counted so far (the warm-up)."""
        with self._lock:
            self.calls.clear()
            self.sends.clear()

    def snapshot(self) -> dict[str, Any]:
        """The counts as plain JSON: total calls, total HTTP attempts, calls per operation."""
        with self._lock:
            return {
                "calls": sum(self.calls.values()),
                "http": sum(self.sends.values()),
                "by_operation": dict(sorted(self.calls.items())),
            }


def install_client_counter() -> ClientCounter:
    """Count the requests of every botocore session made from now on in this process."""
    counter = ClientCounter()
    original = botocore.session.Session.__init__

    def init(self: botocore.session.Session, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.register("before-call", counter.on_call)
        self.register("before-send", counter.on_send)

    botocore.session.Session.__init__ = init
    return counter


def log_offset(log: Path) -> int:
    """The current end of moto's log: where the next request line will be written."""
    return log.stat().st_size


def count_log_requests(log: Path, start: int, end: int | None = None) -> dict[str, int]:
    """The requests moto logged between byte offsets ``start`` and ``end``, by service.

    moto serves every service on one port; SQS requests are ``POST /`` (or ``POST
    /<account>/<queue>``), S3 requests address ``/<bucket>/...`` with any method.
    """
    with log.open("rb") as handle:
        handle.seek(start)
        chunk = handle.read() if end is None else handle.read(max(0, end - start))
    counts = {"total": 0, "sqs": 0, "s3": 0}
    for line in chunk.splitlines():
        match = REQUEST_LINE.match(line)
        if match is None:
            continue
        method, path = match.group(1), match.group(2).split(b"?", 1)[0]
        first = path.strip(b"/").split(b"/", 1)[0]
        counts["sqs" if method == b"POST" and (not first or first.isdigit()) else "s3"] += 1
        counts["total"] += 1
    return counts


def idle_rate(log: Path, seconds: float) -> float:
    """Requests per second moto answers while nothing but idle workers run."""
    start = log_offset(log)
    began = time.monotonic()
    time.sleep(seconds)
    end = log_offset(log)
    return count_log_requests(log, start, end)["total"] / (time.monotonic() - began)
