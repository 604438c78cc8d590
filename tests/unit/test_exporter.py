"""The exporter's bookkeeping of Celery events and its SQS figures (deploy/exporter.py),
without a server: SQS and S3 are fakes answering the few calls the exporter makes."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from botocore.exceptions import ClientError
from prometheus_client import CollectorRegistry

from cloudworker.settings import Settings
from deploy.exporter import (
    CloudWatchPublisher,
    EventMetrics,
    FleetCollector,
    exception_name,
    task_queues,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def value(registry: CollectorRegistry, metric: str, **labels: str) -> float | None:
    return registry.get_sample_value(metric, labels)


def make() -> tuple[EventMetrics, CollectorRegistry, Clock]:
    registry = CollectorRegistry()
    clock = Clock()
    return EventMetrics(registry, default_queue="tasks", clock=clock), registry, clock


def test_exception_names_come_from_the_event_text() -> None:
    assert exception_name("ValueError('x')") == "ValueError"
    assert exception_name("cloudworker.errors.InvalidArguments('bad')") == "InvalidArguments"
    assert exception_name("") == "unknown"
    assert exception_name(None) == "unknown"


def test_later_events_get_the_name_and_queue_of_the_sent_event() -> None:
    metrics, registry, _ = make()
    metrics.on_event(
        {"type": "task-sent", "uuid": "a", "name": "t.x", "queue": "q", "hostname": "c"}
    )
    metrics.on_event({"type": "task-received", "uuid": "a", "hostname": "w1"})
    metrics.on_event({"type": "task-succeeded", "uuid": "a", "hostname": "w1", "runtime": 0.5})
    labels = {"name": "t.x", "hostname": "w1", "queue_name": "q"}
    assert value(registry, "celery_task_sent_total", name="t.x", hostname="c", queue_name="q") == 1
    assert value(registry, "celery_task_received_total", **labels) == 1
    assert value(registry, "celery_task_succeeded_total", **labels) == 1
    assert value(registry, "celery_task_runtime_sum", **labels) == 0.5
    assert value(registry, "celery_task_runtime_count", **labels) == 1
    # The other counters exist at zero, so rate() works before the first failure.
    assert value(registry, "celery_task_failed_total", **labels, exception="") == 0
    assert value(registry, "celery_task_retried_total", **labels) == 0


def test_failures_are_counted_by_exception_and_unknown_tasks_get_the_default_queue() -> None:
    metrics, registry, _ = make()
    metrics.on_event({"type": "task-received", "uuid": "b", "name": "t.y", "hostname": "w"})
    metrics.on_event(
        {"type": "task-failed", "uuid": "b", "hostname": "w", "exception": "KeyError('k')"}
    )
    labels = {"name": "t.y", "hostname": "w", "queue_name": "tasks"}
    assert value(registry, "celery_task_failed_total", **labels, exception="KeyError") == 1
    assert metrics.outcomes == {"task-succeeded": 0, "task-failed": 1}


def test_the_oldest_waiting_task_is_the_oldest_sent_and_not_yet_received() -> None:
    metrics, _, _ = make()
    metrics.on_event(
        {"type": "task-sent", "uuid": "1", "name": "n", "queue": "q", "timestamp": 990}
    )
    metrics.on_event(
        {"type": "task-sent", "uuid": "2", "name": "n", "queue": "q", "timestamp": 995}
    )
    assert metrics.oldest_waiting() == {"q": 10.0}
    metrics.on_event({"type": "task-received", "uuid": "1", "hostname": "w"})
    assert metrics.oldest_waiting() == {"q": 5.0}
    metrics.on_event({"type": "task-received", "uuid": "2", "hostname": "w"})
    assert metrics.oldest_waiting() == {}


def test_a_worker_is_up_while_its_heartbeats_come_and_down_when_offline() -> None:
    metrics, _, clock = make()
    metrics.on_event({"type": "worker-online", "hostname": "w@h", "freq": 30})
    metrics.on_event({"type": "worker-heartbeat", "hostname": "w@h", "freq": 30, "active": 3})
    assert metrics.worker_states() == {"w@h": (1, 3)}
    clock.now += 2 * 30 + 6  # two heartbeats missed
    assert metrics.worker_states() == {"w@h": (0, 0)}
    metrics.on_event({"type": "worker-heartbeat", "hostname": "w@h", "freq": 30, "active": 1})
    assert metrics.worker_states() == {"w@h": (1, 1)}
    metrics.on_event({"type": "worker-offline", "hostname": "w@h"})
    assert metrics.worker_states() == {"w@h": (0, 0)}


def test_a_malformed_event_is_skipped_and_the_next_ones_counted() -> None:
    """A heartbeat with freq="not-a-number" ended the receiver; the tasks run while it
    reconnected (5 s) were never counted, and the error-rate alarm reads those counts."""
    metrics, registry, _ = make()
    metrics.on_event({"type": "worker-heartbeat", "hostname": "w@h", "freq": "not-a-number"})
    metrics.on_event({"type": "worker-heartbeat", "hostname": "v@h", "active": {"a": 1}})
    metrics.on_event({"type": "task-sent", "uuid": "s", "name": "t.z", "timestamp": [1]})
    metrics.on_event({"type": "task-succeeded", "uuid": "c", "name": "t.z", "hostname": "w"})
    metrics.on_event(["not", "an", "event"])  # type: ignore[arg-type]
    labels = {"name": "t.z", "hostname": "w", "queue_name": "tasks"}
    assert value(registry, "celery_task_succeeded_total", **labels) == 1
    assert metrics.worker_states() == {"w@h": (1, 0), "v@h": (1, 0)}  # default interval


class Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def put_metric_data(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)


def test_cloudwatch_gets_the_outcomes_of_each_minute_not_the_totals() -> None:
    metrics, _, _ = make()
    cloudwatch = Recorder()
    publisher = CloudWatchPublisher(metrics, cloudwatch, "prod")
    for uuid in "abc":
        metrics.on_event({"type": "task-succeeded", "uuid": uuid, "name": "n", "hostname": "w"})
    metrics.on_event({"type": "task-failed", "uuid": "d", "name": "n", "hostname": "w"})
    publisher.publish()
    metrics.on_event({"type": "task-succeeded", "uuid": "e", "name": "n", "hostname": "w"})
    publisher.publish()
    sent = [
        {datum["MetricName"]: datum["Value"] for datum in call["MetricData"]}
        for call in cloudwatch.calls
    ]
    assert sent == [
        {"TasksSucceeded": 3.0, "TasksFailed": 1.0},
        {"TasksSucceeded": 1.0, "TasksFailed": 0.0},
    ]
    assert cloudwatch.calls[0]["Namespace"] == "cloudworker"
    dimensions = cloudwatch.calls[0]["MetricData"][0]["Dimensions"]
    assert dimensions == [{"Name": "Stack", "Value": "prod"}]


# -- SQS figures ---------------------------------------------------------------------

SETTINGS = Settings()  # queue prefix "cloudworker-", task queue "tasks"
P = SETTINGS.queue_prefix
PER_QUEUE = (
    "celery_queue_length",
    "cloudworker_queue_messages_in_flight",
    "cloudworker_queue_messages_delayed",
    "cloudworker_dead_letter_queue_length",
)


def gone(operation: str) -> ClientError:
    """SQS's answer about a queue that does not exist."""
    code = "AWS.SimpleQueueService.NonExistentQueue"
    return ClientError({"Error": {"Code": code}}, operation)


class FakeSQS:
    """ListQueues, GetQueueUrl and GetQueueAttributes on queues held in a dict, each
    request recorded.

    ``queues``: SQS name -> (visible, in flight, delayed). A name in ``gone`` is listed
    but deleted by the time it is read; one in ``refused`` answers AccessDenied.
    """

    #: Most queue URLs SQS answers a ListQueues with (without MaxResults: no next page).
    most = 1000

    def __init__(self, queues: dict[str, tuple[int, int, int]]) -> None:
        self.queues = queues
        self.gone: set[str] = set()
        self.refused: set[str] = set()
        self.requests: list[tuple[str, str]] = []

    def get_paginator(self, operation: str) -> FakeSQS:
        assert operation == "list_queues"
        return self

    def paginate(
        self, *, QueueNamePrefix: str, PaginationConfig: dict[str, int] | None = None
    ) -> list[dict[str, list[str]]]:
        names = sorted(name for name in self.queues if name.startswith(QueueNamePrefix))
        size = min((PaginationConfig or {}).get("PageSize", self.most), self.most)
        pages = [names[start : start + size] for start in range(0, len(names), size)] or [[]]
        if not PaginationConfig:
            pages = pages[:1]
        for _ in pages:
            self.requests.append(("ListQueues", QueueNamePrefix))
        return [{"QueueUrls": [f"https://sqs.test/1/{name}" for name in page]} for page in pages]

    def get_queue_url(self, *, QueueName: str) -> dict[str, str]:
        self.requests.append(("GetQueueUrl", QueueName))
        if QueueName not in self.queues:
            raise gone("GetQueueUrl")
        return {"QueueUrl": f"https://sqs.test/1/{QueueName}"}

    def get_queue_attributes(self, *, QueueUrl: str, AttributeNames: list[str]) -> Any:
        name = QueueUrl.rsplit("/", 1)[-1]
        self.requests.append(("GetQueueAttributes", name))
        if name in self.gone or name not in self.queues:
            raise gone("GetQueueAttributes")
        if name in self.refused:
            raise ClientError({"Error": {"Code": "AccessDenied"}}, "GetQueueAttributes")
        visible, in_flight, delayed = self.queues[name]
        return {
            "Attributes": {
                "ApproximateNumberOfMessages": str(visible),
                "ApproximateNumberOfMessagesNotVisible": str(in_flight),
                "ApproximateNumberOfMessagesDelayed": str(delayed),
            }
        }


class FakeS3:
    def get_paginator(self, operation: str) -> FakeS3:
        assert operation == "list_objects_v2"
        return self

    def paginate(self, **kwargs: Any) -> list[dict[str, Any]]:
        return [{"Contents": [{"Size": 10}, {"Size": 5}]}]


def collector(sqs: FakeSQS, *, refresh: float = 30.0) -> FleetCollector:
    events = EventMetrics(CollectorRegistry(), default_queue="tasks")
    return FleetCollector(events, SETTINGS, sqs=sqs, s3=FakeS3(), refresh=refresh)


def scrape(fleet: FleetCollector) -> dict[str, dict[str, float]]:
    """Metric -> its samples, by label ``queue_name`` (or "" for a fleet-wide figure)."""
    figures: dict[str, dict[str, float]] = {}
    for family in fleet.collect():
        samples = figures.setdefault(family.name, {})
        for sample in family.samples:
            samples[sample.labels.get("queue_name", "")] = sample.value
    return figures


def queue(visible: int = 0, in_flight: int = 0, delayed: int = 0) -> tuple[int, int, int]:
    return visible, in_flight, delayed


def test_every_task_queue_is_reported_under_its_own_name_and_no_other_queue() -> None:
    sqs = FakeSQS(
        {
            f"{P}tasks": queue(4, 1, 2),
            f"{P}tasks-dlq": queue(3),
            f"{P}emails": queue(7, 0, 1),
            f"{P}emails-dlq": queue(5),
            f"{P}resp-0123abcd": queue(9, 9, 9),  # a client's response queue
            f"{P}rx-flower-events": queue(8, 8, 8),  # a receiver's queue
            f"{P}inbox-events": queue(6, 6, 6),  # S3's inbox events
        }
    )
    figures = scrape(collector(sqs))
    assert figures["celery_queue_length"] == {"tasks": 4, "emails": 7}
    assert figures["cloudworker_queue_messages_in_flight"] == {"tasks": 1, "emails": 0}
    assert figures["cloudworker_queue_messages_delayed"] == {"tasks": 2, "emails": 1}
    assert figures["cloudworker_dead_letter_queue_length"] == {"tasks": 3, "emails": 5}
    assert figures["cloudworker_response_queues"] == {"": 1}
    assert figures["cloudworker_claim_checked_bytes"] == {"": 15}


def test_only_queues_with_their_dead_letter_queue_are_task_queues() -> None:
    names = [
        f"{P}tasks",  # the configured queue: one even without its dead-letter queue
        f"{P}emails",
        f"{P}emails-dlq",
        f"{P}scratch",  # no dead-letter queue: not made as task queues are
        f"{P}resp-ab",  # never task queues, even beside a queue named like a DLQ
        f"{P}resp-ab-dlq",
        f"{P}rx-events-w1",
        f"{P}rx-events-w1-dlq",
        f"{P}inbox-events",
        f"{P}inbox-events-dlq",
        f"{P}orders.fifo",
        f"{P}orders-dlq.fifo",
        f"{P}orders.fifo-dlq",  # not a FIFO queue's dead-letter queue
        f"{P}tasks-p3",
        "other-jobs",  # not under the prefix
        "other-jobs-dlq",
    ]
    assert task_queues(names, SETTINGS) == {
        f"{P}emails": [f"{P}emails"],
        f"{P}orders.fifo": [f"{P}orders.fifo"],
        f"{P}tasks": [f"{P}tasks", f"{P}tasks-p3"],
    }


def test_priority_lanes_add_up_in_their_queue_and_are_no_queue_of_their_own() -> None:
    sqs = FakeSQS(
        {
            f"{P}tasks": queue(1, 0, 0),
            f"{P}tasks-dlq": queue(0),
            f"{P}tasks-p3": queue(2, 1, 0),
            f"{P}tasks-p3-dlq": queue(1),
            f"{P}tasks-p9": queue(4, 0, 1),
            f"{P}tasks-p9-dlq": queue(2),
        }
    )
    figures = scrape(collector(sqs))
    assert figures["celery_queue_length"] == {"tasks": 7}
    assert figures["cloudworker_queue_messages_in_flight"] == {"tasks": 1}
    assert figures["cloudworker_queue_messages_delayed"] == {"tasks": 1}
    assert figures["cloudworker_dead_letter_queue_length"] == {"tasks": 3}


def test_lanes_made_before_their_queue_are_reported_under_the_queue() -> None:
    """A client sending only priority 9 makes the lane, not the queue: its backlog counts."""
    sqs = FakeSQS({f"{P}emails-p9": queue(5, 0, 0), f"{P}emails-p9-dlq": queue(1)})
    figures = scrape(collector(sqs))
    assert figures["celery_queue_length"] == {"emails": 5}
    assert figures["cloudworker_dead_letter_queue_length"] == {"emails": 1}


def test_a_fifo_queue_is_reported_under_its_celery_name() -> None:
    sqs = FakeSQS({f"{P}reports.fifo": queue(2, 1, 0), f"{P}reports-dlq.fifo": queue(1)})
    figures = scrape(collector(sqs))
    assert figures["celery_queue_length"] == {"reports.fifo": 2}
    assert figures["cloudworker_queue_messages_in_flight"] == {"reports.fifo": 1}
    assert figures["cloudworker_dead_letter_queue_length"] == {"reports.fifo": 1}


def test_the_configured_queue_is_reported_without_its_dead_letter_queue() -> None:
    sqs = FakeSQS({f"{P}tasks": queue(1, 2, 3), f"{P}emails": queue(4)})
    figures = scrape(collector(sqs))
    assert figures["celery_queue_length"] == {"tasks": 1}
    assert figures["cloudworker_queue_messages_delayed"] == {"tasks": 3}
    # No dead-letter queue read, no figure: absent is not the same as an empty one.
    assert "cloudworker_dead_letter_queue_length" not in figures


def test_a_queue_gone_between_the_listing_and_its_read_is_skipped_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sqs = FakeSQS(
        {
            f"{P}tasks": queue(4),
            f"{P}tasks-dlq": queue(1),
            f"{P}emails": queue(7),
            f"{P}emails-dlq": queue(2),
        }
    )
    sqs.gone = {f"{P}tasks"}  # even the configured queue: deleted is deleted
    with caplog.at_level(logging.WARNING, logger="cloudworker.exporter"):
        figures = scrape(collector(sqs))
    assert figures["celery_queue_length"] == {"emails": 7}
    assert figures["cloudworker_dead_letter_queue_length"] == {"emails": 2}
    assert caplog.records == []
    # The dead-letter queue of a queue gone is not read either.
    assert ("GetQueueAttributes", f"{P}tasks-dlq") not in sqs.requests


def test_a_queue_that_cannot_be_read_is_a_warning_and_the_rest_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sqs = FakeSQS(
        {
            f"{P}tasks": queue(4),
            f"{P}tasks-dlq": queue(1),
            f"{P}emails": queue(7),
            f"{P}emails-dlq": queue(2),
            f"{P}emails-p3": queue(3),
        }
    )
    sqs.refused = {f"{P}emails-p3"}
    with caplog.at_level(logging.WARNING, logger="cloudworker.exporter"):
        figures = scrape(collector(sqs))
    # emails' counts without its lane's would understate it: they are left out.
    assert figures["celery_queue_length"] == {"tasks": 4}
    assert figures["cloudworker_dead_letter_queue_length"] == {"tasks": 1, "emails": 2}
    assert [record.levelname for record in caplog.records] == ["WARNING"]
    assert f"{P}emails-p3" in caplog.records[0].getMessage()


def test_a_refresh_reads_each_queue_once_and_a_scrape_within_it_reads_nothing() -> None:
    sqs = FakeSQS(
        {
            f"{P}tasks": queue(4),
            f"{P}tasks-dlq": queue(1),
            f"{P}tasks-p6": queue(1),
            f"{P}emails": queue(7),
            f"{P}emails-dlq": queue(2),
            f"{P}resp-0123abcd": queue(),
            f"{P}rx-flower-events": queue(),
            f"{P}inbox-events": queue(),
        }
    )
    fleet = collector(sqs, refresh=3600)
    first = scrape(fleet)
    # One listing (response queues counted from it too); one read per task queue, lane
    # and dead-letter queue (tasks-p6 has none); no GetQueueUrl: the listing has the URLs.
    assert sorted(sqs.requests) == [
        ("GetQueueAttributes", f"{P}emails"),
        ("GetQueueAttributes", f"{P}emails-dlq"),
        ("GetQueueAttributes", f"{P}tasks"),
        ("GetQueueAttributes", f"{P}tasks-dlq"),
        ("GetQueueAttributes", f"{P}tasks-p6"),
        ("ListQueues", P),
    ]
    sqs.queues[f"{P}tasks"] = queue(40)
    assert scrape(fleet) == first
    assert len(sqs.requests) == 6
    # Once refresh has passed, the next scrape reads again.
    fleet = collector(sqs, refresh=0)
    scrape(fleet)
    assert scrape(fleet)["celery_queue_length"] == {"tasks": 41, "emails": 7}
    assert len(sqs.requests) == 6 + 2 * 6


def test_the_listing_walks_every_page_of_queues() -> None:
    """SQS answers at most 1,000 queue URLs a request, and a next page only when asked
    for pages: a deployment with many clients' response queues hid its task queues."""
    sqs = FakeSQS({f"{P}resp-{n}": queue() for n in range(5)})
    sqs.queues.update({f"{P}tasks": queue(1), f"{P}tasks-dlq": queue()})
    sqs.most = 2
    figures = scrape(collector(sqs))
    assert figures["celery_queue_length"] == {"tasks": 1}
    assert figures["cloudworker_response_queues"] == {"": 5}
    assert sqs.requests.count(("ListQueues", P)) == 4
