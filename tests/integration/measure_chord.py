"""What one chord part costs in AWS requests, and how soon after the last part the body starts.

A measurement, not a test: not collected by ``make test`` (no ``test_`` prefix).
Run it on its own, with no other stack running:

    .venv/bin/python -m pytest tests/integration/measure_chord.py -s -p no:cacheprovider

A worker (``-c 2``) talks to the endpoint through a counting proxy. Each round
sends a group of N ``tests.add`` tasks and waits for it, then a chord of the same
N tasks with a body, and counts the requests of each by operation (client and
worker together): the difference, divided by N, is what being a chord part adds.
The delay is the body's start (its own clock) minus the latest ``date_done`` of
the header results in S3 (the worker's clock: the same machine).
"""

from __future__ import annotations

import os
import statistics
from collections import Counter
from collections.abc import Iterator

import pytest
from celery import chord, group

from tests.integration.conftest import LocalStack
from tests.support.faultproxy import FaultProxy
from tests.support.workers import Workers

pytestmark = pytest.mark.integration

ROUNDS = 5
PARTS = 100


@pytest.fixture(scope="module")
def proxy(local_stack: LocalStack) -> Iterator[FaultProxy]:
    with FaultProxy(local_stack.env["AWS_ENDPOINT_URL"]) as running:
        yield running


def test_chord_part_cost_and_body_delay(local_stack: LocalStack, proxy: FaultProxy) -> None:
    import dataclasses

    from cloudworker.application import create_app

    workers = Workers.on_queue(local_stack, "chords", visibility=60, wait_seconds=20)
    workers.env["AWS_ENDPOINT_URL"] = proxy.url
    saved = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = proxy.url
    try:
        app = create_app(dataclasses.replace(workers.app.services.settings))
        workers.app = app
        workers.start("measured", wait_ready=True)
        add = app.signature("tests.add")
        per_part: list[float] = []
        delays: list[float] = []
        extra: Counter[str] = Counter()
        for round_ in range(ROUNDS):
            before = proxy.operation_counts()
            header = [add.clone(args=(n, round_)) for n in range(PARTS)]
            assert group(header).apply_async().get(timeout=120) == [
                n + round_ for n in range(PARTS)
            ]
            plain = proxy.operation_counts() - before
            before = proxy.operation_counts()
            result = chord(header, app.signature("tests.started_at")).apply_async()
            body_started = result.get(timeout=120)
            chorded = proxy.operation_counts() - before
            difference = Counter({op: chorded[op] - plain[op] for op in chorded | plain})
            extra.update(difference)
            per_part.append(sum(difference.values()) / PARTS)
            done = [r.date_done for r in result.parent.results]
            delays.append(body_started - max(d.timestamp() for d in done))
        print(f"\nrequests a chord part adds (chord of {PARTS} minus group of {PARTS}):")
        print(f"  median {statistics.median(per_part):.2f} per part, rounds {per_part}")
        for op, count in sorted(extra.items(), key=lambda item: -item[1]):
            print(f"  {op}: {count / ROUNDS / PARTS:+.3f} per part")
        median_ms = statistics.median(delays) * 1000
        print(f"body start after the last part's result: median {median_ms:.0f} ms,")
        print(f"  rounds (ms) {[round(d * 1000) for d in delays]}")
    finally:
        workers.close("measured")
        if saved is not None:
            os.environ["AWS_ENDPOINT_URL"] = saved
