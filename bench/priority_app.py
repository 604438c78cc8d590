"""The worker app of ``python -m bench.priorities``: priorities on unless told otherwise.

``BENCH_PRIORITY_LANES=0`` leaves Celery's ``task_queue_max_priority`` unset (the
baseline: one queue, priorities ignored); otherwise it is 10 and the queue has lanes.
"""

from __future__ import annotations

import os
import time

from cloudworker import create_app

app = create_app()
if os.environ.get("BENCH_PRIORITY_LANES", "1") != "0":
    app.conf.task_queue_max_priority = 10


@app.task(name="bench.nap")  # type: ignore[untyped-decorator]
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
