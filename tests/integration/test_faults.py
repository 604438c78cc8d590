"""The worker survives its endpoint failing: 5xx answers, resets, delays, a 30 s cut.

A second worker serves its own queue and reaches the endpoint only through a
fault-injecting proxy (:mod:`tests.support.faultproxy`); the client talks to the
endpoint directly. Every task must be answered, once, and the worker must be
alive afterwards.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator

import pytest
from celery.result import AsyncResult

from deploy import local
from deploy.provision import provision
from tasks.application import CloudworkerCelery, create_app
from tasks.definitions import TaskSet, register
from tests.integration.conftest import ROOT, LocalStack
from tests.support.faultproxy import FaultProxy

pytestmark = pytest.mark.integration

WORKER = "faulty"


@dataclasses.dataclass
class FaultyWorker:
    proxy: FaultProxy
    app: CloudworkerCelery
    tasks: TaskSet

    def log(self, stack: LocalStack) -> str:
        return stack.worker_log(WORKER)


@pytest.fixture(scope="module")
def faulty(local_stack: LocalStack) -> Iterator[FaultyWorker]:
    settings = dataclasses.replace(local_stack.settings, task_queue="faults")
    provision(settings, sqs=local_stack.client("sqs"), s3=local_stack.client("s3"))
    with FaultProxy(local_stack.env["AWS_ENDPOINT_URL"]) as proxy:
        env = {
            **os.environ,
            **local_stack.env,
            "AWS_ENDPOINT_URL": proxy.url,
            "CLOUDWORKER_TASK_QUEUE": "faults",
            "CLOUDWORKER_WAIT_SECONDS": "5",
            "CLOUDWORKER_INBOX_ENABLED": "false",
            "PYTHONPATH": str(ROOT),
        }
        local.start_process(local_stack.stack, WORKER, local.worker_command(WORKER, 2), env)
        app = create_app(settings)
        try:
            yield FaultyWorker(proxy, app, register(app))
        finally:
            app.services.mailbox.close()
            local.stop_process(local_stack.stack, WORKER)


def send(faulty: FaultyWorker, count: int, start: int) -> list[tuple[int, AsyncResult]]:
    return [
        (i, faulty.tasks.compute_stats.delay([i, i + 1, i + 2]))
        for i in range(start, start + count)
    ]


def check(results: list[tuple[int, AsyncResult]], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    for i, result in results:
        assert result.get(timeout=max(1, deadline - time.monotonic()))["median"] == i + 1


def test_worker_rides_out_5xx_resets_delays_and_a_30_second_cut(
    stack: LocalStack, faulty: FaultyWorker
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
    assert stack.worker_alive(WORKER), faulty.log(stack)[-3000:]
    log = faulty.log(stack)
    assert "Unrecoverable error" not in log
    assert "failed (server error, timeout or lost connection" in log
    # The worker still serves after the storm.
    check(send(faulty, 3, 500), timeout=60)
