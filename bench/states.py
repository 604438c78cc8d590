"""CPU per ``update_state`` call inside a task, and how many states are written.

``python -m bench.states`` (not part of ``make bench``): 10,000 calls, five times,
against the in-memory store and queues, so it measures cloudworker's own work per
call (Celery's meta, the JSON codec, the throttle), with no request at all: a
state waits ``CLOUDWORKER_STATE_INTERVAL`` and later ones replace it
(:mod:`cloudworker.results.progress`).
"""

from __future__ import annotations

import statistics
import time
import uuid
from types import SimpleNamespace

from cloudworker.application import create_app
from cloudworker.objectstore import MemoryObjectStore
from cloudworker.queues import MemoryQueueService
from cloudworker.services import Services
from cloudworker.settings import Settings

CALLS = 10_000
ROUNDS = 5


def main() -> None:
    store, queues = MemoryObjectStore(), MemoryQueueService()
    settings = Settings(state_interval=1.0)
    services = Services(settings, store=lambda: store, queues=lambda: queues)
    app = create_app(settings, services=services)
    per_call_us = []
    for _ in range(ROUNDS):
        task_id = str(uuid.uuid4())
        request = SimpleNamespace(
            id=task_id, reply_to=None, chord=None, group=None, parent_id=None, children=[]
        )
        began = time.process_time()
        for step in range(CALLS):
            meta = {"current": step, "total": CALLS}
            app.backend.store_result(task_id, meta, "PROGRESS", request=request)
        per_call_us.append((time.process_time() - began) / CALLS * 1e6)
    writer = services.states
    print(
        f"update_state: median {statistics.median(per_call_us):.1f} us CPU per call "
        f"(rounds {[round(r, 1) for r in per_call_us]}); {writer.updates} states handed in, "
        f"{writer.writes} written so far (each one S3 PUT and one SendMessage)"
    )


if __name__ == "__main__":
    main()
