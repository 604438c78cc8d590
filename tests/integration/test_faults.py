"""The worker survives its endpoint failing: 5xx answers, resets, delays, a 30 s cut.

A second worker serves its own queue and reaches the endpoint only through a
fault-injecting proxy (:mod:`tests.support.faultproxy`); the client talks to the
endpoint directly. Every task must be answered, once, and the worker must be
alive afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from celery.result import AsyncResult

from tests.integration.conftest import LocalStack, ProxiedWorker, proxied_worker

pytestmark = pytest.mark.integration

WORKER = "faulty"


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


def test_worker_rides_out_5xx_resets_delays_and_a_30_second_cut(
    stack: LocalStack, faulty: ProxiedWorker
) -> None:
    proxy = faulty.proxy
    check(send(faulty, 3, 0), timeout=60)  # healthy first

    proxy.fault("503", rate=0.5)
    batch = send(faulty, 5, 100)
    time.sleep(6)
    proxy.fault("reset", rate=0.5)
    batch += send(faulty, 5, 200)
    time.sleep(6)
    proxy.fault("delay", rate=0.5, delay=2)
    batch += send(faulty, 5, 300)
    time.sleep(6)
    proxy.fault("cut")
    batch += send(faulty, 5, 400)
    time.sleep(30)
    proxy.fault(None)
    check(batch)

    assert proxy.injected > 10, (proxy.requests, proxy.injected)
    assert stack.worker_alive(WORKER), stack.worker_log(WORKER)[-3000:]
    log = stack.worker_log(WORKER)
    assert "Unrecoverable error" not in log
    assert "failed (server error, timeout or lost connection" in log
    # The worker still serves after the storm.
    check(send(faulty, 3, 500), timeout=60)
