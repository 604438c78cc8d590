"""A pool process stores a success's result in the background, and acknowledges it after.

A worker of its own (one pool process, its own queue) reaches the endpoint
through a proxy (:mod:`tests.support.faultproxy`) that makes S3 PUTs slow or
fail. Its pool process must take its next task while its last result is on its
way to S3, must not have the task's message deleted before that result is
stored, and, when the PUT fails, must leave the message for SQS to deliver
again, so the result is stored by the next run (cloudworker/results/finishing.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from bench import latency
from cloudworker.keys import result_key
from tests.integration.conftest import LocalStack, ProxiedWorker, proxied_worker
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

WORKER = "finishing"
QUEUE = "finishing"
#: A received task stays hidden this long once its worker stops extending it.
VISIBILITY = 6
#: Every S3 PUT through the proxy takes this long (half of it before S3 has the object).
SLOW_PUT = 8.0


@pytest.fixture(scope="module")
def worker(local_stack: LocalStack) -> Iterator[ProxiedWorker]:
    with proxied_worker(
        local_stack, WORKER, QUEUE, concurrency=1, visibility_timeout=VISIBILITY
    ) as started:
        yield started


def queue_name(stack: LocalStack) -> str:
    return f"{stack.settings.queue_prefix}{QUEUE}"


def stored(stack: LocalStack, task_id: str) -> dict[str, object] | None:
    """The result record of ``task_id`` in S3, if it is there."""
    s3 = stack.client("s3")
    try:
        body = s3.get_object(Bucket=stack.settings.bucket, Key=result_key(task_id))["Body"]
    except s3.exceptions.NoSuchKey:
        return None
    record: dict[str, object] = json.loads(body.read())
    return record


def test_the_pool_process_takes_its_next_task_while_s3_stores_the_last_result(
    stack: LocalStack, worker: ProxiedWorker
) -> None:
    worker.proxy.latency = latency.Model(
        "slow S3 PUT", {"s3:PUT": latency.Latency(SLOW_PUT, SLOW_PUT)}
    )
    try:
        results = [worker.tasks.compute_stats.delay([i, i + 1, i + 2]) for i in range(4)]
        answers = [r.get(timeout=60)["median"] for r in results]
        # One pool process answered all four while the first result was still on its
        # way to S3: it did not wait for that PUT before taking the next task.
        first_stored_then = stored(stack, results[0].id)
        in_flight_then = stack.queue_depth(queue_name(stack))
    finally:
        worker.proxy.latency = latency.NONE
    assert answers == [1, 2, 3, 4]
    assert first_stored_then is None
    # ...and the tasks' messages were not deleted before their results were stored.
    assert in_flight_then >= 1
    # Once the PUTs are done, every record is in S3 and every message deleted.
    eventually(
        lambda: all(stored(stack, r.id) for r in results),
        timeout=4 * SLOW_PUT,
        interval=0.2,
        what="every record stored",
    )
    assert [stored(stack, r.id)["result"]["median"] for r in results] == [1, 2, 3, 4]  # type: ignore[index]
    assert stack.wait_for_depth(queue_name(stack), 0, timeout=30)


def test_a_success_whose_result_cannot_be_stored_is_delivered_again_and_stored_then(
    stack: LocalStack, worker: ProxiedWorker
) -> None:
    worker.proxy.fault("500", operations=["s3:PUT"])
    try:
        result = worker.tasks.compute_stats.delay([5, 6, 7])
        # The notice went beside the PUT, so the caller has its answer...
        assert result.get(timeout=60)["median"] == 6
        # ...but the record could not be stored, so the message was not deleted.
        eventually(
            lambda: "its result could not be stored" in stack.worker_log(WORKER),
            interval=0.2,
            what=lambda: f"the failed store logged: {stack.worker_log(WORKER)[-3000:]}",
        )
        assert stored(stack, result.id) is None
        assert stack.queue_depth(queue_name(stack)) == 1
    finally:
        worker.proxy.fault(None)
    # SQS hands the message out again once its visibility lapses; that run stores it.
    eventually(
        lambda: stored(stack, result.id) is not None,
        timeout=VISIBILITY + 60,
        interval=0.2,
        what="the redelivered run stored the record",
    )
    assert stored(stack, result.id)["result"] == {  # type: ignore[index]
        **result.get(timeout=5),
    }
    assert stack.wait_for_depth(queue_name(stack), 0, timeout=30)
    log = stack.worker_log(WORKER)
    assert log.count(f"[{result.id}] succeeded") == 2, log[-3000:]
