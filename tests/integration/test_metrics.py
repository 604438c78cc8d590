"""Metrics a real Prometheus scrapes: known tasks and a known failure, read back with PromQL.

``python -m deploy.exporter`` runs as its own process on the session's stack and
Debian's ``prometheus`` server scrapes it every second; the values are read
through Prometheus's HTTP API, as a dashboard or an alert rule reads them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu.entity import Queue

from deploy import local
from tests.integration.conftest import LocalStack
from tests.support.waiting import eventually
from tests.support.workers import Workers

pytestmark = pytest.mark.integration

QUEUE = "metrics"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def free_port() -> int:
    return local._free_port()


@pytest.fixture(scope="module")
def fleet(local_stack: LocalStack) -> Iterator[Workers]:
    workers = Workers.on_queue(local_stack, QUEUE, visibility=60, wait_seconds=1)
    # What CLOUDWORKER_SENT_EVENTS turns on in a client: celery_task_sent_total and
    # the oldest waiting task's age come from these events.
    workers.app.conf.task_send_sent_event = True
    try:
        yield workers
    finally:
        workers.close("metrics1", "exporter")


@pytest.fixture(scope="module")
def exporter(fleet: Workers, local_stack: LocalStack) -> str:
    """The exporter's address, once it receives the fleet's events."""
    port = free_port()
    before = local._event_receivers(local_stack.env)
    command = [
        sys.executable,
        "-m",
        "deploy.exporter",
        "--port",
        str(port),
        "--refresh",
        "1",
    ]
    local.start_process(fleet.stack, "exporter", command, fleet.env)
    local._wait_for_port(port, fleet.stack, "exporter")
    eventually(
        lambda: local._event_receivers(local_stack.env) - before,
        interval=0.5,
        what="the exporter subscribed to the events",
    )
    return f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def prometheus(exporter: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus server scraping the exporter every second; its API's URL."""
    assert Path(PROMETHEUS).exists(), "Debian's prometheus package (make test installs it)"
    work = tmp_path_factory.mktemp("prometheus")
    config = work / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: cloudworker\n"
        f"    static_configs:\n      - targets: ['{exporter}']\n"
    )
    port = free_port()
    log = (work / "prometheus.log").open("wb")
    server = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: _ready(url), timeout=90, interval=0.5, what="Prometheus ready")
        eventually(
            lambda: query(url, 'up{job="cloudworker"}') == [1.0],
            timeout=90,
            interval=0.5,
            what="Prometheus scraped the exporter",
        )
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def query(url: str, promql: str) -> list[float]:
    """The values of an instant PromQL query, sorted."""
    address = f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(address, timeout=10) as answer:
        body: Any = json.load(answer)
    assert body["status"] == "success", body
    return sorted(float(sample["value"][1]) for sample in body["data"]["result"])


def settle(url: str, promql: str, expected: list[float], timeout: float = 90) -> None:
    """Wait until ``promql`` gives ``expected``; fail with what it gave last."""
    eventually(
        lambda: query(url, promql) == expected,
        timeout=timeout,
        interval=0.5,
        what=lambda: f"{promql} gave {query(url, promql)}, not {expected}",
    )


def test_prometheus_reads_known_tasks_a_failure_the_queue_and_the_worker(
    fleet: Workers, prometheus: str, local_stack: LocalStack, tmp_path: Path
) -> None:
    # Four tasks wait in the queue before any worker serves it.
    markers = [tmp_path / f"task{n}" for n in range(3)]
    results = [fleet.slow(0.3, marker) for marker in markers]
    failed = fleet.app.send_task("tests.fail", args=["planned"])
    settle(prometheus, f'celery_queue_length{{queue_name="{QUEUE}"}}', [4.0])
    settle(prometheus, f'sum(celery_task_sent_total{{queue_name="{QUEUE}"}})', [4.0])
    waited = query(prometheus, f'cloudworker_queue_oldest_task_age_seconds{{queue_name="{QUEUE}"}}')
    assert len(waited) == 1 and waited[0] > 0

    fleet.start("metrics1", wait_ready=True)
    assert [result.get(timeout=60) for result in results] == [0.3] * 3
    with pytest.raises(Exception, match="planned"):
        failed.get(timeout=60)
    assert failed.state == "FAILURE"

    settle(prometheus, 'sum(celery_task_succeeded_total{name="tests.slow"})', [3.0])
    settle(prometheus, 'sum(celery_task_received_total{name=~"tests[.].*"})', [4.0])
    settle(prometheus, 'sum(celery_task_started_total{name=~"tests[.].*"})', [4.0])
    settle(
        prometheus,
        'sum(celery_task_failed_total{name="tests.fail", exception="PlannedFailure"})',
        [1.0],
    )
    assert query(prometheus, 'sum(celery_task_failed_total{name="tests.slow"})') == [0.0]
    assert query(prometheus, 'sum(celery_task_runtime_count{name="tests.slow"})') == [3.0]
    # Each of the three slept 0.3 s: the histogram holds task runtimes, not zeros.
    runtime = query(prometheus, 'sum(celery_task_runtime_sum{name="tests.slow"})')
    assert len(runtime) == 1 and runtime[0] >= 0.9
    assert query(prometheus, 'sum(celery_task_retried_total{name="tests.slow"})') == [0.0]

    settle(prometheus, f'celery_queue_length{{queue_name="{QUEUE}"}}', [0.0])
    settle(prometheus, f'cloudworker_queue_oldest_task_age_seconds{{queue_name="{QUEUE}"}}', [0.0])
    settle(prometheus, 'celery_worker_up{hostname=~"metrics1@.*"}', [1.0])
    settle(prometheus, 'celery_worker_tasks_active{hostname=~"metrics1@.*"}', [0.0])


def test_prometheus_reads_what_sqs_and_s3_hold(
    fleet: Workers, prometheus: str, local_stack: LocalStack
) -> None:
    s3 = local_stack.client("s3")
    bucket = local_stack.settings.bucket
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="payloads/")
    held = sum(item["Size"] for page in pages for item in page.get("Contents", []))
    s3.put_object(Bucket=bucket, Key="payloads/metrics-test/blob", Body=b"x" * 4321)
    try:
        settle(prometheus, "cloudworker_claim_checked_bytes", [float(held + 4321)])
    finally:
        s3.delete_object(Bucket=bucket, Key="payloads/metrics-test/blob")
    settle(prometheus, "cloudworker_claim_checked_bytes", [float(held)])

    sqs = local_stack.client("sqs")
    prefix = local_stack.settings.queue_prefix
    dlq = sqs.get_queue_url(QueueName=f"{prefix}{QUEUE}-dlq")["QueueUrl"]
    sqs.send_message(QueueUrl=dlq, MessageBody="a dead letter, for the gauge")
    settle(prometheus, f'cloudworker_dead_letter_queue_length{{queue_name="{QUEUE}"}}', [1.0])

    alive = len(local_stack.response_queues())
    assert alive >= 1  # this test process's own
    settle(prometheus, "cloudworker_response_queues", [float(alive)])
    assert query(prometheus, f'cloudworker_queue_messages_in_flight{{queue_name="{QUEUE}"}}') == [
        0.0
    ]


def test_every_metric_the_dashboard_draws_is_one_the_exporter_serves(
    exporter: str, prometheus: str
) -> None:
    from tests.unit.test_grafana_dashboard import EXPORTED

    with urllib.request.urlopen(f"http://{exporter}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    # prometheus_client names a counter family without its _total suffix.
    served = families | {f"{name}_total" for name in families}
    assert sorted(EXPORTED - served) == []


def test_a_queue_made_on_first_use_is_read_with_its_priority_lanes(
    fleet: Workers, prometheus: str
) -> None:
    """The exporter finds every task queue, not only CLOUDWORKER_TASK_QUEUE: one routed to
    and created on first use, its priority lane's task counted in it."""
    routed = f"{QUEUE}-routed-{uuid.uuid4().hex[:8]}"
    lanes = Queue(routed, routing_key=routed, queue_arguments={"x-max-priority": 10})  # type: ignore[no-untyped-call]
    fleet.app.send_task("tests.add", args=[1, 2], queue=lanes, priority=0)
    fleet.app.send_task("tests.add", args=[3, 4], queue=lanes, priority=9)
    # No worker consumes it: both wait, one in the queue, one in its lane -p9.
    settle(prometheus, f'celery_queue_length{{queue_name="{routed}"}}', [2.0])
    settle(prometheus, f'cloudworker_dead_letter_queue_length{{queue_name="{routed}"}}', [0.0])
    assert query(prometheus, f'celery_queue_length{{queue_name="{routed}-p9"}}') == []
