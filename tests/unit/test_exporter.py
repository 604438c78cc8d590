"""The exporter's bookkeeping of Celery events (deploy/exporter.py), without a server."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from deploy.exporter import CloudWatchPublisher, EventMetrics, exception_name


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
