"""``python -m deploy.exporter``: Prometheus metrics of a fleet, under celery-exporter's names.

Celery users already have dashboards and alerts for celery-exporter
(github.com/danihodovic/celery-exporter), which reads Celery's events; its
queue metrics know only Redis and RabbitMQ. This exporter serves the same
metric and label names from the events cloudworker carries over SNS (one more
receiver on the events topic, like Flower), plus what SQS and S3 tell about
the fleet and Celery cannot:

======================================  ==========================================
``celery_task_{sent,received,started,    counters by ``name``, ``hostname``,
succeeded,failed,retried,rejected,       ``queue_name`` (``failed`` also by
revoked}_total``                         ``exception``), from the task events
``celery_task_runtime``                  histogram of ``task-succeeded`` runtimes
``celery_worker_up``,                    per worker (``hostname``), from heartbeats:
``celery_worker_tasks_active``           1 while its heartbeats arrive in time
``celery_queue_length``                  visible messages of each task queue (SQS)
``cloudworker_queue_messages_in_flight`` received, not yet acknowledged (SQS)
``cloudworker_queue_messages_delayed``   waiting out a countdown (SQS)
``cloudworker_queue_oldest_task_age_     seconds the oldest task sent and not yet
seconds``                                received has waited (task-sent events; SQS
                                         reports this only to CloudWatch)
``cloudworker_dead_letter_queue_length`` messages in each task queue's DLQ
``cloudworker_response_queues``          clients' response queues alive now
``cloudworker_claim_checked_bytes``,     payloads held in S3 (``payloads/``)
``cloudworker_claim_checked_objects``
======================================  ==========================================

The SQS figures are by ``queue_name``, a task queue's name without
``CLOUDWORKER_QUEUE_PREFIX`` (``tasks``, ``emails``, ``reports.fifo``), for every
task queue of the deployment: each queue under the prefix that has its dead-letter
queue (``<name>-dlq``, ``<base>-dlq.fifo``), as every task queue is made, and
``CLOUDWORKER_TASK_QUEUE`` even without one. A queue's priority lanes
(``<name>-p3``, ``-p6``, ``-p9``) count as part of it, their dead letters with its
own. Clients' response queues, receivers' queues, the inbox's queue and the
dead-letter queues are not task queues.

Flower's own ``/metrics`` is not reused: its names (``flower_events_total``...)
are not the ones dashboards use, and Flower is optional. ``task-sent`` events
come from clients, which send them with ``CLOUDWORKER_SENT_EVENTS`` on (one more
SNS publish per task, so off by default): without them there is no
``celery_task_sent_total`` and no oldest-task age, the rest is all there. The
SQS and S3 figures are read at most once per ``--refresh`` seconds, whatever
the scrape rate, so that scraping costs a bounded number of requests: one
ListQueues walk (1,000 queues a page), one GetQueueAttributes per task queue,
lane and dead-letter queue, and the S3 listing of the payloads.

With ``--cloudwatch-stack NAME`` it also publishes, once a minute, the tasks
that succeeded and failed (namespace ``cloudworker``, dimension ``Stack``),
which the stack's error-rate alarm reads (deploy/aws/cloudworker.yaml).

    python -m deploy.exporter [--host 127.0.0.1] [--port 9808] [--refresh 30]
                              [--cloudwatch-stack NAME]
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from botocore.exceptions import ClientError
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from cloudworker.deadletters import is_task_queue
from cloudworker.queues import is_gone, name_of
from cloudworker.settings import Settings, dead_letter_name
from cloudworker.settings import load as load_settings
from cloudworker.sqs.priority_lanes import is_lane

__all__ = ["EventMetrics", "FleetCollector", "main", "task_queues"]

log = logging.getLogger("cloudworker.exporter")

#: The task events counted, and the counter each feeds (celery-exporter's names).
TASK_EVENTS = {
    "task-sent": "celery_task_sent",
    "task-received": "celery_task_received",
    "task-started": "celery_task_started",
    "task-succeeded": "celery_task_succeeded",
    "task-failed": "celery_task_failed",
    "task-retried": "celery_task_retried",
    "task-rejected": "celery_task_rejected",
    "task-revoked": "celery_task_revoked",
}
_TASK_LABELS = ("name", "hostname", "queue_name")
#: Tasks remembered for their name and queue (later events carry only the id).
MAX_TASKS = 10_000
#: A worker is up while its heartbeats come: it is down after this many missed.
MISSED_HEARTBEATS = 2
_EXCEPTION = re.compile(r"^\s*([A-Za-z_][\w.]*)")


def exception_name(text: Any) -> str:
    """``ValueError`` from the ``exception`` field of a task-failed event: ``ValueError('x')``."""
    match = _EXCEPTION.match(str(text or ""))
    return match.group(1).rsplit(".", 1)[-1] if match else "unknown"


class EventMetrics:
    """Counters, the runtime histogram and worker gauges, fed one Celery event at a time."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        default_queue: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._default_queue = default_queue
        self._clock = clock
        self._lock = threading.Lock()
        self.counters = {
            event: Counter(
                name,
                f"Celery {event} events.",
                [*_TASK_LABELS, "exception"] if event == "task-failed" else list(_TASK_LABELS),
                registry=registry,
            )
            for event, name in TASK_EVENTS.items()
        }
        self.runtime = Histogram(
            "celery_task_runtime",
            "Seconds a task ran, from its task-succeeded event.",
            list(_TASK_LABELS),
            registry=registry,
        )
        #: uuid -> (name, queue); insertion-ordered, trimmed to MAX_TASKS.
        self._tasks: dict[str, tuple[str, str]] = {}
        #: uuid -> when it was sent, for tasks sent and not yet received.
        self._waiting: dict[str, tuple[str, float]] = {}
        self._sent_queues: set[str] = set()
        #: hostname -> (last heartbeat, heartbeat interval, active tasks, online)
        self._workers: dict[str, tuple[float, float, int, bool]] = {}
        #: Tasks succeeded and failed so far (CloudWatch publishes the increase).
        self.outcomes = {"task-succeeded": 0, "task-failed": 0}
        #: Events skipped because they could not be read.
        self.skipped = 0

    def on_event(self, event: Mapping[str, Any]) -> None:
        """Count ``event``; events of other kinds are ignored, malformed ones skipped.

        Anyone who can publish to the events topic can send an event: one that
        does not parse (a ``freq`` that is not a number...) is skipped with a
        warning. Raised, it ended the receiver, which reconnected 5 s later and
        missed the events sent meanwhile, the error-rate alarm's input among them.
        """
        if not isinstance(event, Mapping):
            return
        kind = str(event.get("type", ""))[:40]
        try:
            if kind.startswith("worker-"):
                self._on_worker_event(kind, event)
            elif kind in self.counters:
                self._on_task_event(kind, event)
        except (TypeError, ValueError, OverflowError, AttributeError) as exc:
            self.skipped += 1
            log.warning("skipped a malformed %s event: %s", kind, exc)

    def _on_task_event(self, kind: str, event: Mapping[str, Any]) -> None:
        uuid = str(event.get("uuid", ""))
        with self._lock:
            name, queue = self._tasks.get(uuid, ("", ""))
            name = str(event.get("name") or name or "unknown")
            queue = str(event.get("queue") or event.get("routing_key") or queue)
            queue = queue or self._default_queue
            self._remember(uuid, name, queue)
            if kind == "task-sent":
                sent_at = _number(event.get("timestamp")) or self._clock()
                self._waiting[uuid] = (queue, sent_at)
                self._sent_queues.add(queue)
            else:
                self._waiting.pop(uuid, None)
            if kind in self.outcomes:
                self.outcomes[kind] += 1
        labels = {"name": name, "hostname": str(event.get("hostname", "")), "queue_name": queue}
        if kind != "task-sent":
            # As celery-exporter does: every counter of a task seen on a worker exists
            # from its first event, so rate() and sums work before the first failure.
            for other, counter in self.counters.items():
                if other not in (kind, "task-sent"):
                    extra = {"exception": ""} if other == "task-failed" else {}
                    counter.labels(**labels, **extra).inc(0)
        if kind == "task-failed":
            exception = exception_name(event.get("exception"))
            self.counters[kind].labels(**labels, exception=exception).inc()
        else:
            self.counters[kind].labels(**labels).inc()
        runtime = event.get("runtime")
        if kind == "task-succeeded" and isinstance(runtime, int | float):
            self.runtime.labels(**labels).observe(float(runtime))

    def _remember(self, uuid: str, name: str, queue: str) -> None:
        self._tasks.pop(uuid, None)
        self._tasks[uuid] = (name, queue)
        while len(self._tasks) > MAX_TASKS:
            forgotten = next(iter(self._tasks))
            del self._tasks[forgotten]
            self._waiting.pop(forgotten, None)

    def _on_worker_event(self, kind: str, event: Mapping[str, Any]) -> None:
        hostname = str(event.get("hostname", ""))
        if not hostname:
            return
        with self._lock:
            _, _, active, _ = self._workers.get(hostname, (0.0, 0.0, 0, False))
            interval = _number(event.get("freq")) or 60.0
            if kind == "worker-offline":
                self._workers[hostname] = (0.0, interval, 0, False)
                return
            if kind == "worker-heartbeat":
                active = int(_number(event.get("active")) or 0)
            self._workers[hostname] = (self._clock(), interval, active, True)

    def worker_states(self) -> dict[str, tuple[int, int]]:
        """hostname -> (up, active tasks), judged now."""
        now = self._clock()
        states = {}
        with self._lock:
            for hostname, (seen, interval, active, online) in self._workers.items():
                up = online and now - seen <= MISSED_HEARTBEATS * interval + 5
                states[hostname] = (int(up), active if up else 0)
        return states

    def queues_with_sent_events(self) -> set[str]:
        """The queues whose clients send task-sent events: only those have a waiting age."""
        with self._lock:
            return set(self._sent_queues)

    def oldest_waiting(self) -> dict[str, float]:
        """queue -> seconds its oldest task sent and not yet received has waited."""
        now = self._clock()
        oldest: dict[str, float] = {}
        with self._lock:
            for queue, sent in self._waiting.values():
                oldest[queue] = max(oldest.get(queue, 0.0), now - sent)
        return oldest


def _number(value: Any) -> float | None:
    """``value`` as a finite, non-negative number; None if it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def task_queues(names: Collection[str], settings: Settings) -> dict[str, list[str]]:
    """The task queues among SQS queue ``names``: each one's name -> the queues holding its tasks.

    A task queue is a queue of the deployment (not a response, receiver, inbox or
    dead-letter queue: :func:`cloudworker.deadletters.is_task_queue`) whose
    dead-letter queue is among ``names``, as every task queue is created; the
    configured one counts without it. Its tasks are in it (if listed) and in its
    priority lanes (``<name>-p3``...), which are never task queues of their own: a
    lane with its dead-letter queue makes its queue one, listed or not.
    """
    listed = set(names)
    found: dict[str, list[str]] = {}
    for name in sorted(listed):
        if is_lane(name) or not is_task_queue(name, settings):
            continue
        if dead_letter_name(name) in listed or name == settings.task_queue_name:
            found[name] = [name]
    for name in sorted(listed):
        if not is_lane(name):
            continue
        queue = name.rpartition("-p")[0]  # is_lane's split: tasks-p3 is a lane of tasks
        if not is_task_queue(queue, settings):
            continue
        if queue in found or dead_letter_name(name) in listed:
            found.setdefault(queue, []).append(name)
    return dict(sorted(found.items()))


class FleetCollector(Collector):
    """Gauges read at scrape time: workers from the events, queues from SQS, payloads from S3."""

    def __init__(
        self, events: EventMetrics, settings: Settings, *, sqs: Any, s3: Any, refresh: float
    ) -> None:
        self._events = events
        self._settings = settings
        self._sqs = sqs
        self._s3 = s3
        self._refresh = refresh
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._figures: dict[str, float] = {}
        #: queue_name -> its figures (visible, in_flight, delayed, dead_letters)
        self._queues: dict[str, dict[str, float]] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "celery_worker_up", "1 while the worker's heartbeats arrive.", labels=["hostname"]
        )
        active = GaugeMetricFamily(
            "celery_worker_tasks_active", "Tasks the worker runs now.", labels=["hostname"]
        )
        for hostname, (is_up, running) in sorted(self._events.worker_states().items()):
            up.add_metric([hostname], is_up)
            active.add_metric([hostname], running)
        yield up
        yield active
        oldest = GaugeMetricFamily(
            "cloudworker_queue_oldest_task_age_seconds",
            "Seconds the oldest task sent and not yet received has waited (from events).",
            labels=["queue_name"],
        )
        waiting = self._events.oldest_waiting()
        for name in sorted(self._events.queues_with_sent_events() | set(waiting)):
            oldest.add_metric([name], waiting.get(name, 0.0))
        yield oldest
        queues, figures = self._aws_figures()
        per_queue = {
            "celery_queue_length": (
                "Visible messages in each task queue (with its priority lanes).",
                "visible",
            ),
            "cloudworker_queue_messages_in_flight": (
                "Task messages of each task queue received and not yet acknowledged.",
                "in_flight",
            ),
            "cloudworker_queue_messages_delayed": (
                "Task messages of each task queue waiting out a countdown.",
                "delayed",
            ),
            "cloudworker_dead_letter_queue_length": (
                "Messages in each task queue's dead-letter queue (and its lanes').",
                "dead_letters",
            ),
        }
        for metric, (text, key) in per_queue.items():
            if any(key in counts for counts in queues.values()):
                family = GaugeMetricFamily(metric, text, labels=["queue_name"])
                for queue, counts in queues.items():
                    if key in counts:
                        family.add_metric([queue], counts[key])
                yield family
        single = {
            "cloudworker_response_queues": ("Clients' response queues now.", "response_queues"),
            "cloudworker_claim_checked_bytes": (
                "Bytes of claim-checked payloads in S3.",
                "payload_bytes",
            ),
            "cloudworker_claim_checked_objects": (
                "Claim-checked payloads in S3.",
                "payload_objects",
            ),
        }
        for metric, (text, key) in single.items():
            if key in figures:
                yield GaugeMetricFamily(metric, text, value=figures[key])

    def _aws_figures(self) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
        """The SQS and S3 figures, read again once they are ``refresh`` seconds old:
        queue_name -> that task queue's figures, and the fleet's own."""
        with self._lock:
            if time.monotonic() - self._read_at >= self._refresh:
                self._queues, self._figures = self._read_aws()
                self._read_at = time.monotonic()
            return {queue: dict(counts) for queue, counts in self._queues.items()}, dict(
                self._figures
            )

    def _read_aws(self) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
        figures: dict[str, float] = {}
        queues: dict[str, dict[str, float]] = {}
        settings = self._settings
        try:
            pages = self._sqs.get_paginator("list_queues").paginate(
                QueueNamePrefix=settings.queue_prefix, PaginationConfig={"PageSize": 1000}
            )
            urls = {name_of(url): url for page in pages for url in page.get("QueueUrls", [])}
        except Exception as exc:  # noqa: BLE001 - a scrape shows what it could read
            log.warning("could not list the queues: %s", exc)
        else:
            figures["response_queues"] = sum(
                name.startswith(settings.response_queue_prefix) for name in urls
            )
            for name, holding in task_queues(urls, settings).items():
                counts = self._queue_figures(name, holding, urls)
                if counts is not None:
                    queues[name.removeprefix(settings.queue_prefix)] = counts
        try:
            size = count = 0
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=settings.bucket, Prefix=settings.s3_prefix + "payloads/"
            )
            for page in pages:
                for item in page.get("Contents", []):
                    size += int(item.get("Size", 0))
                    count += 1
            figures.update(payload_bytes=size, payload_objects=count)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not measure the claim-checked payloads: %s", exc)
        return queues, figures

    def _queue_figures(
        self, name: str, holding: list[str], urls: Mapping[str, str]
    ) -> dict[str, float] | None:
        """Task queue ``name``'s figures, summed over ``holding`` (it and its lanes) and
        their dead-letter queues; None if all of ``holding`` is gone (deleted since the
        listing). A figure a queue could not tell is left out rather than understated."""
        read, failed = self._read_queues(holding, urls)
        if not read and not failed:
            log.debug("task queue %s is gone", name)
            return None
        counts: dict[str, float] = {}
        if not failed:
            counts.update(
                visible=sum(one["ApproximateNumberOfMessages"] for one in read),
                in_flight=sum(one["ApproximateNumberOfMessagesNotVisible"] for one in read),
                delayed=sum(one["ApproximateNumberOfMessagesDelayed"] for one in read),
            )
        dead, failed = self._read_queues([dead_letter_name(queue) for queue in holding], urls)
        if dead and not failed:
            counts["dead_letters"] = sum(one["ApproximateNumberOfMessages"] for one in dead)
        return counts

    def _read_queues(
        self, names: list[str], urls: Mapping[str, str]
    ) -> tuple[list[dict[str, float]], bool]:
        """The counts of those of ``names`` that are listed and still there, and whether
        one of them could not be read (a warning). A queue gone is skipped quietly."""
        read: list[dict[str, float]] = []
        failed = False
        for name in names:
            if name not in urls:
                continue
            try:
                read.append(self._attributes(urls[name]))
            except Exception as exc:  # noqa: BLE001 - a scrape shows what it could read
                if isinstance(exc, ClientError) and is_gone(exc):
                    continue
                failed = True
                log.warning("could not read the attributes of queue %s: %s", name, exc)
        return read, failed

    def _attributes(self, url: str) -> dict[str, float]:
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return {key: float(value) for key, value in attributes.items()}


class CloudWatchPublisher:
    """Publishes, once a minute, the tasks that succeeded and failed since the last time."""

    NAMESPACE = "cloudworker"

    def __init__(self, events: EventMetrics, cloudwatch: Any, stack: str) -> None:
        self._events = events
        self._cloudwatch = cloudwatch
        self._stack = stack
        self._last = dict(events.outcomes)

    def publish(self) -> None:
        now = dict(self._events.outcomes)
        names = {"task-succeeded": "TasksSucceeded", "task-failed": "TasksFailed"}
        data = [
            {
                "MetricName": names[kind],
                "Dimensions": [{"Name": "Stack", "Value": self._stack}],
                "Value": float(now[kind] - self._last.get(kind, 0)),
                "Unit": "Count",
            }
            for kind in names
        ]
        self._cloudwatch.put_metric_data(Namespace=self.NAMESPACE, MetricData=data)
        self._last = now

    def run_forever(self, interval: float = 60.0) -> None:
        while True:
            time.sleep(interval)
            try:
                self.publish()
            except Exception as exc:  # noqa: BLE001 - the next minute carries the count
                log.warning("could not publish task counts to CloudWatch: %s", exc)


def capture_events(app: Any, events: EventMetrics) -> None:
    """Receive the fleet's events for ever, reconnecting after a failure."""
    while True:
        try:
            with app.connection_for_read() as connection:
                receiver = app.events.Receiver(connection, handlers={"*": events.on_event})
                receiver.capture(limit=None, timeout=None, wakeup=False)
        except Exception as exc:  # noqa: BLE001 - a broken receive is retried, not fatal
            log.warning("event receiver failed (%s); reconnecting in 5 s", exc)
            time.sleep(5)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.exporter", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=9808, help="port of /metrics")
    parser.add_argument(
        "--refresh", type=float, default=30.0, help="seconds between reads of SQS and S3"
    )
    parser.add_argument(
        "--cloudwatch-stack",
        default="",
        help="publish task outcome counts to CloudWatch under this stack name",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Serve /metrics and feed it from the events until killed."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from cloudworker import aws
    from cloudworker.application import create_app

    settings = load_settings()
    app = create_app(settings)
    registry = CollectorRegistry()
    events = EventMetrics(registry, default_queue=settings.task_queue)
    registry.register(
        FleetCollector(
            events,
            settings,
            sqs=aws.client("sqs", settings),
            s3=aws.client("s3", settings),
            refresh=args.refresh,
        )
    )
    start_http_server(args.port, addr=args.host, registry=registry)
    log.info("serving metrics on http://%s:%d/metrics", args.host, args.port)
    if args.cloudwatch_stack:
        publisher = CloudWatchPublisher(
            events, aws.client("cloudwatch", settings), args.cloudwatch_stack
        )
        threading.Thread(target=publisher.run_forever, name="cloudwatch", daemon=True).start()
    capture_events(app, events)
    return 0


if __name__ == "__main__":
    sys.exit(main())
