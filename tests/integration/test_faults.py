"""The worker survives its endpoint failing: 5xx answers, resets, delays, a long cut.

A second worker serves its own queue and reaches the endpoint only through a
fault-injecting proxy (:mod:`tests.support.faultproxy`); the client talks to the
endpoint directly. Every task must be answered, once, and the worker must be
alive afterwards.

Each fault lasts until the worker has met it: until the proxy has injected it into
several of the worker's requests, and the cut until the worker has failed
:data:`CUT_FAILURES` receives in a row (its backoff doubling each time), not for a
fixed number of seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from celery.result import AsyncResult

from tests.integration.conftest import LocalStack, ProxiedWorker, proxied_worker
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

WORKER = "faulty"
#: Requests of the worker's that each fault must hit before the next one is set.
HITS = 4
#: Receives in a row the worker must fail during the cut before the network comes back.
CUT_FAILURES = 5


@pytest.fixture(scope="module")
def faulty(local_stack: LocalStack) -> Iterator[ProxiedWorker]:
    with proxied_worker(local_stack, WORKER, "faults", concurrency=2) as started:
        yield started


def send(faulty: ProxiedWorker, count: int, start: int) -> list[tuple[int, AsyncResult]]:
    return [
        (i, faulty.tasks.compute_stats.delay([i, i + 1, i + 2]))
        for i in range(start, start + count)
    ]


def check(results: list[tuple[int, AsyncResult]], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    for i, result in results:
        assert result.get(timeout=max(1, deadline - time.monotonic()))["median"] == i + 1


def hit(faulty: ProxiedWorker, times: int = HITS) -> None:
    """Wait until the proxy has injected the current fault ``times`` more times."""
    start = faulty.proxy.injected
    eventually(lambda: faulty.proxy.injected - start >= times, what="the fault hit the worker")


def test_worker_rides_out_5xx_resets_delays_and_a_long_cut(
    stack: LocalStack, faulty: ProxiedWorker
) -> None:
    proxy = faulty.proxy
    check(send(faulty, 3, 0), timeout=60)  # healthy first

    proxy.fault("503", rate=0.5)
    batch = send(faulty, 5, 100)
    hit(faulty)
    proxy.fault("reset", rate=0.5)
    batch += send(faulty, 5, 200)
    hit(faulty)
    proxy.fault("delay", rate=0.5, delay=2)
    batch += send(faulty, 5, 300)
    hit(faulty)
    proxy.fault("cut")
    batch += send(faulty, 5, 400)
    eventually(
        lambda: f"lost connection, {CUT_FAILURES} in a row" in stack.worker_log(WORKER),
        what=lambda: f"{CUT_FAILURES} failed receives in a row: {stack.worker_log(WORKER)[-2000:]}",
        timeout=120,
    )
    proxy.fault(None)
    check(batch)

    assert proxy.injected > 10, (proxy.requests, proxy.injected)
    assert stack.worker_alive(WORKER), stack.worker_log(WORKER)[-3000:]
    log = stack.worker_log(WORKER)
    assert "Unrecoverable error" not in log
    assert "failed (server error, timeout or lost connection" in log
    # The worker still serves after the storm.
    check(send(faulty, 3, 500), timeout=60)
