"""A slow task for reliability tests, loaded into test workers with ``--include``.

Each execution appends the pid of the process running it to a marker file, so a
test can count executions and find (and kill) the pool process.
"""

from __future__ import annotations

import os
import time

from tasks import app


@app.task(name="tests.slow")  # type: ignore[untyped-decorator]
def slow(seconds: float, marker: str) -> float:
    """Note this execution in ``marker``, then sleep ``seconds``."""
    with open(marker, "a", encoding="utf-8") as out:
        out.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return seconds
