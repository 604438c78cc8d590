"""No single AWS error answer stops a worker: each operation it uses, refused once.

A worker of its own reaches the endpoint through a fault proxy
(:mod:`tests.support.faultproxy`). In each round the proxy answers the first request
of every operation the worker makes with the same error: a 400 with an AWS error
code (a receipt gone stale, a queue deleted under it, access denied, a parameter
refused) or a 500. Meanwhile the round's work uses every kind of request a worker
makes: receives and batched deletes on the task queue, results stored in S3 and
pushed, claim-checked arguments read and deleted, a visibility extension for a
task that runs past a third of the visibility timeout, task events over SNS, and a
control command (received on a no-ack queue, whose message kombu deleted through its
asynchronous client: a failure of that delete ended the worker, issue #26). Every
task must be answered, the worker must stay up, and its log must show no crash.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudworker.keys import result_key
from deploy import local
from tests.integration.conftest import LocalStack, ProxiedWorker, proxied_worker
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

WORKER = "refused"
#: Short, so that a task outlives one beat of the visibility heartbeat (a third of it).
VISIBILITY = 6
#: The requests a round must have refused at least once each.
EXERCISED = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessageBatch",
    "sqs:DeleteMessage",  # a control request on the no-ack control queue
    "sqs:ChangeMessageVisibilityBatch",
    "s3:PUT",
    "s3:GET",
    "s3:DELETE",
    "sns:PublishBatch",
}


@pytest.fixture(scope="module")
def worker(local_stack: LocalStack) -> Iterator[ProxiedWorker]:
    with proxied_worker(
        local_stack,
        WORKER,
        "aws-errors",
        concurrency=2,
        include=("tests.support.slow_tasks",),
        visibility_timeout=VISIBILITY,
    ) as started:
        # A running worker is what is refused: its start (and its first receives) first.
        local.wait_for_log(local_stack.stack, WORKER, 0, local.READY_MARK)
        yield started


def answered(result: Any, timeout: float = 90) -> Any:
    """The result, or the exception the task failed with: it was answered either way."""
    try:
        return result.get(timeout=timeout)
    except Exception as exc:
        if "TimeoutError" in type(exc).__name__:
            raise
        return exc


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("400", "ReceiptHandleIsInvalid"),
        ("400", "QueueDoesNotExist"),
        ("400", "AccessDenied"),
        ("400", "InvalidParameterValue"),
        ("500", "InternalError"),
    ],
)
def test_every_request_refused_once_costs_the_worker_nothing(
    stack: LocalStack, worker: ProxiedWorker, tmp_path: Path, kind: str, code: str
) -> None:
    log_start = len(stack.worker_log(WORKER))
    worker.proxy.fault(kind, code=code, once_per_operation=True)
    try:
        small = [worker.tasks.compute_stats.delay([n, n + 1, n + 2]) for n in range(4)]
        # Arguments in S3: one's read may be refused, the other's read then its delete.
        large = [worker.tasks.compute_stats.delay(list(range(60_000 + n))) for n in range(2)]
        marker = tmp_path / "slow"
        slow = worker.app.send_task("tests.slow", args=[VISIBILITY / 3 + 1.5, str(marker)])
        eventually(marker.exists, what="the slow task started")
        worker.app.control.ping(timeout=2)  # a control request: its reply may be refused
        outcomes = [answered(result) for result in [*small, *large, slow]]
        eventually(
            lambda: worker.proxy.hit >= EXERCISED,
            timeout=60,
            what=lambda: f"every kind of request refused once: {sorted(worker.proxy.hit)}",
        )
    finally:
        worker.proxy.fault(None)
    if kind == "500":  # retried by botocore or by the worker: everything succeeds
        assert [o["median"] for o in outcomes[:4]] == [1, 2, 3, 4], outcomes
        assert [o["count"] for o in outcomes[4:6]] == [60_000, 60_001]
        assert outcomes[6] == VISIBILITY / 3 + 1.5
    log = stack.worker_log(WORKER)[log_start:]
    assert stack.worker_alive(WORKER), log[-3000:]
    for crash in ("Unrecoverable error", "CRITICAL", "Traceback", "ERROR/"):
        assert crash not in log, log[log.find(crash) - 2000 :][:4000]
    # The worker still serves, every request answered as usual.
    after = worker.tasks.compute_stats.delay([7, 8, 9, uuid.uuid4().int % 10])
    assert after.get(timeout=60)["count"] == 4


def test_a_failure_s3_refuses_to_store_is_delivered_again_not_lost(
    stack: LocalStack, worker: ProxiedWorker
) -> None:
    """A result the pool process stores itself (a failure) meets a refusal that is not
    transient: the message comes back and the next run stores it. Celery alone took the
    refusal for a crash of the worker (a warning with a traceback, an ERROR) and
    deleted the message, leaving no result in S3."""
    log_start = len(stack.worker_log(WORKER))
    worker.proxy.fault("400", code="AccessDenied", operations={"s3:PUT"}, once_per_operation=True)
    try:
        failing = worker.app.send_task("tests.fail", args=["planned"])
        with pytest.raises(Exception, match="planned") as raised:
            failing.get(timeout=60)
        assert type(raised.value).__name__ == "PlannedFailure"
        eventually(
            lambda: "its result could not be stored" in stack.worker_log(WORKER)[log_start:],
            what="the refused store logged as a warning",
        )
        assert worker.proxy.hit == {"s3:PUT"}
    finally:
        worker.proxy.fault(None)
    store = worker.app.services.store()
    eventually(
        lambda: store.read(result_key(failing.id)) is not None,
        timeout=60,
        what="the failure stored by the message's next delivery",
    )
    record = json.loads(store.read(result_key(failing.id))[0])  # type: ignore[index]
    assert record["status"] == "FAILURE"
    log = stack.worker_log(WORKER)[log_start:]
    assert log.count(f"tests.fail[{failing.id}] received") == 2, log[-3000:]
    assert "Exception raised outside body" not in log, log[-3000:]
    assert stack.worker_alive(WORKER)
