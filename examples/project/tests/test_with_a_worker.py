"""Integration tests: a worker of this project's app against a real endpoint.

The ``cloudworker_worker`` fixture (cloudworker's pytest plugin) starts
``celery -A tasks worker`` for the session, against the endpoint the
environment names (``. .run/env`` after ``python -m deploy local up --workers 0``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import boto3
from celery import chord, group

import tasks

TIMEOUT = 60


def _response_queues(app: Any) -> set[str]:
    prefix = app.services.settings.response_queue_prefix
    urls = boto3.client("sqs").list_queues(QueueNamePrefix=prefix).get("QueueUrls", [])
    return {url.rsplit("/", 1)[-1] for url in urls}


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_results_are_pushed_to_the_caller(cloudworker_worker: Any) -> None:
    # A process's response queue is made when it first waits (a process that only
    # sends makes none); what it sent before may be read from S3 then.
    assert tasks.add.delay(1, 1).get(timeout=TIMEOUT) == 2
    results = [tasks.add.delay(n, 3) for n in range(5)]
    assert [result.get(timeout=TIMEOUT) for result in results] == [3, 4, 5, 6, 7]
    # The answers came on this process's response queue, not from reading S3.
    mailbox = cloudworker_worker.services.mailbox
    assert all(mailbox.notice(result.id) is not None for result in results)


def test_a_plain_celery_task_base_gets_a_large_argument_through_s3(
    cloudworker_worker: Any,
) -> None:
    assert tasks.measure.delay("y" * 2_000_000).get(timeout=TIMEOUT) == 2_000_000


def test_a_large_result_comes_back_whole(cloudworker_worker: Any) -> None:
    assert tasks.report.delay(3_000_000).get(timeout=TIMEOUT) == "x" * 3_000_000


def test_a_retry_with_a_countdown(cloudworker_worker: Any) -> None:
    assert tasks.flaky.delay().get(timeout=TIMEOUT) == 1


def test_a_chord_and_a_group(cloudworker_worker: Any) -> None:
    assert chord(tasks.add.s(i, i) for i in range(5))(tasks.total.s()).get(timeout=TIMEOUT) == 20
    assert group(tasks.add.s(i, 1) for i in range(5))().get(timeout=TIMEOUT) == [1, 2, 3, 4, 5]


def test_celerys_default_max_retries(cloudworker_worker: Any) -> None:
    assert tasks.retry_budget.delay().get(timeout=TIMEOUT) == 3


def test_a_process_that_only_sends_creates_no_queue_and_another_reads_its_result(
    cloudworker_worker: Any,
) -> None:
    before = _response_queues(cloudworker_worker)
    task_id = _python("import tasks; print(tasks.add.delay(20, 22).id)")
    assert _response_queues(cloudworker_worker) == before
    reader = f"import tasks; print(tasks.app.AsyncResult({task_id!r}).get(timeout={TIMEOUT}))"
    assert _python(reader) == "42"


def test_a_stock_celery_producer_is_served_during_a_migration(cloudworker_worker: Any) -> None:
    """A message from stock Celery on kombu's own ``sqs://`` (base64 body, a UUID
    ``reply_to``) runs, and its result is stored in S3 for anyone to read."""
    settings = cloudworker_worker.services.settings
    task_id = str(uuid.uuid4())
    _python(
        "from celery import Celery\n"
        "stock = Celery('stock', broker='sqs://')\n"
        f"stock.conf.broker_transport_options = {{'region': {settings.region!r}, "
        f"'queue_name_prefix': {settings.queue_prefix!r}}}\n"
        f"stock.send_task('tasks.add', (40, 2), task_id={task_id!r}, "
        f"queue={settings.task_queue!r})\n"
    )
    assert cloudworker_worker.AsyncResult(task_id).get(timeout=TIMEOUT) == 42
    key = f"{settings.s3_prefix}results/{task_id}.json"
    stored = boto3.client("s3").get_object(Bucket=settings.bucket, Key=key)["Body"].read()
    assert json.loads(stored)["result"] == 42
