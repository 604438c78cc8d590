"""A worker app with Celery's priorities on (``task_queue_max_priority``), for the tests.

``celery -A tests.support.priority_app worker``: settings from the environment, as
the reference app's, with every queue declared with priorities, so that its lanes
are consumed (cloudworker/sqs/priority_lanes.py).
"""

from __future__ import annotations

import time

from cloudworker import create_app

app = create_app()
app.conf.task_queue_max_priority = 10


@app.task(name="tests.nap")  # type: ignore[untyped-decorator]
def nap(seconds: float) -> float:
    """Sleep ``seconds``; answer when it ended (epoch seconds)."""
    time.sleep(seconds)
    return time.time()
