"""``python -m deploy schedules``: an app's ``beat_schedule`` as EventBridge Scheduler schedules.

With the schedules made, no ``celery beat`` process is needed: EventBridge
Scheduler sends each entry's task message to its queue when it is due, and a
worker runs it. One schedule per entry, in the schedule group ``<prefix>beat``;
a sync makes the group's schedules exactly the app's entries (made, updated, and
those of entries gone deleted). Run beat or the schedules, not both: each would
send every tick.

What a schedule can be (:func:`expression`):

* a ``crontab`` becomes ``cron(...)`` in the app's ``timezone``, its fields as
  Celery expands them; EventBridge needs one of day of month and day of week to
  be ``?``, so an entry restricting both is refused;
* an interval (a number of seconds, a ``timedelta``, ``schedule``) of whole
  minutes becomes ``rate(...)``; a shorter or uneven one is refused: EventBridge's
  smallest interval is a minute, and such an entry stays with ``celery beat``;
* ``solar`` and schedules of one's own are refused.

Each firing sends the same message (the schedule's ``Input``, written here as the
app would send the task, plain JSON): :mod:`cloudworker.sqs.scheduled` gives it a
task id of its own when a worker receives it. An entry's ``options`` may name the
``queue`` (not a FIFO queue: the same message each time would be dropped as a
duplicate), a ``priority`` (its lane, on a queue with lanes) and ``headers``;
``expires``, ``countdown`` and ``eta`` are refused, since they would be fixed at
the sync, not at each firing.

    python -m deploy schedules --app MODULE --role-arn ARN [--remove]

``--role-arn`` is the IAM role EventBridge Scheduler assumes to send to the
queues (``sqs:SendMessage`` on them, trusted by ``scheduler.amazonaws.com``;
with a KMS key, ``kms:GenerateDataKey`` on it too); the local endpoints take any.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from celery import Celery
from celery.app.utils import find_app
from celery.schedules import crontab, maybe_schedule, schedule
from kombu.serialization import dumps

from cloudworker import aws
from cloudworker.settings import Settings
from cloudworker.sqs.priority_lanes import PriorityLanes
from cloudworker.sqs.scheduled import SCHEDULE_HEADER, SCHEDULE_NAME

__all__ = ["Entry", "ScheduleError", "entries", "expression", "group_name", "main", "sync"]

#: The task id a schedule's message carries until a worker gives it its run's.
PLACEHOLDER_ID = "scheduled"
_OPTIONS = frozenset({"queue", "priority", "headers"})
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")


class ScheduleError(ValueError):
    """A ``beat_schedule`` entry EventBridge Scheduler cannot take; the message says why."""


@dataclass(frozen=True)
class Entry:
    """One schedule: its name, when it fires, where it sends and what."""

    name: str
    expression: str
    timezone: str
    queue: str
    body: str


def group_name(settings: Settings) -> str:
    """The schedule group of a deployment's schedules."""
    return f"{settings.queue_prefix}beat"


def expression(value: Any, app: Celery | None = None) -> str:
    """EventBridge Scheduler's expression for a ``beat_schedule`` entry's ``schedule``."""
    found = maybe_schedule(value, app=app)
    if isinstance(found, crontab):
        return _cron(found)
    if type(found) is schedule:
        seconds = found.run_every.total_seconds()
        if seconds < 60 or seconds % 60:
            raise ScheduleError(
                f"every {seconds:g} s: EventBridge Scheduler's intervals are whole minutes "
                "(keep celery beat for this entry)"
            )
        minutes = int(seconds // 60)
        for unit, size in (("day", 1440), ("hour", 60), ("minute", 1)):
            if minutes % size == 0:
                count = minutes // size
                return f"rate({count} {unit}{'s' if count > 1 else ''})"
    raise ScheduleError(f"{type(found).__name__} schedules have no EventBridge expression")


def _cron(tab: crontab) -> str:
    restricted_days = tab._orig_day_of_month != "*"
    restricted_weekdays = str(tab._orig_day_of_week) != "*"
    if restricted_days and restricted_weekdays:
        raise ScheduleError(
            "a crontab restricting both day of month and day of week: EventBridge "
            "needs one of them to be '?'"
        )

    def field(given: Any, expanded: set[int], names: Sequence[str] | None = None) -> str:
        if str(given) == "*":
            return "*"
        values = sorted(expanded)
        return ",".join(names[v] if names else str(v) for v in values)

    minute = field(tab._orig_minute, tab.minute)
    hour = field(tab._orig_hour, tab.hour)
    month = field(tab._orig_month_of_year, tab.month_of_year)
    if restricted_weekdays:
        day, weekday = "?", field(tab._orig_day_of_week, tab.day_of_week, _DAYS)
    else:
        day, weekday = field(tab._orig_day_of_month, tab.day_of_month), "?"
    return f"cron({minute} {hour} {day} {month} {weekday} *)"


def entries(app: Celery) -> list[Entry]:
    """The app's ``beat_schedule`` as schedules, or :class:`ScheduleError` naming the entry."""
    found: list[Entry] = []
    names: dict[str, str] = {}
    timezone = str(app.conf.timezone or "UTC")
    for key, spec in (app.conf.beat_schedule or {}).items():
        try:
            found.append(_entry(app, str(key), spec, timezone))
        except ScheduleError as exc:
            raise ScheduleError(f"beat_schedule entry {key!r}: {exc}") from None
        name = found[-1].name
        if name in names:
            raise ScheduleError(f"entries {names[name]!r} and {key!r} make one schedule name")
        names[name] = str(key)
    return found


def _entry(app: Celery, key: str, spec: Mapping[str, Any], timezone: str) -> Entry:
    name = re.sub(r"[^0-9A-Za-z_.-]+", "-", key).strip("-")[:64]
    if not SCHEDULE_NAME.fullmatch(name):
        raise ScheduleError("its name has nothing a schedule's name can hold")
    options = dict(spec.get("options") or {})
    unknown = set(options) - _OPTIONS
    if unknown:
        raise ScheduleError(
            f"options {', '.join(sorted(unknown))} would be fixed when the schedule is made "
            "(EventBridge sends the same message each time); allowed: "
            + ", ".join(sorted(_OPTIONS))
        )
    task, args, kwargs = spec["task"], list(spec.get("args") or ()), dict(spec.get("kwargs") or {})
    route = app.amqp.router.route(dict(options), task, args, kwargs)
    queue = route["queue"]
    if queue.name.endswith(".fifo"):
        raise ScheduleError(
            f"queue {queue.name} is a FIFO queue: a schedule sends the same message each "
            "time, which SQS would drop as a duplicate within 5 minutes (keep beat for it)"
        )
    lanes = PriorityLanes()
    lanes.declare(queue.name, queue.queue_arguments)
    priority = options.get("priority")
    headers, properties, body, _ = app.amqp.as_task_v2(
        PLACEHOLDER_ID, task, args=args, kwargs=kwargs
    )
    headers = {**headers, **(options.get("headers") or {}), SCHEDULE_HEADER: name}
    content_type, encoding, data = dumps(body, serializer="json")  # type: ignore[no-untyped-call]
    envelope = {
        "body": data,
        "content-encoding": encoding,
        "content-type": content_type,
        "headers": headers,
        "properties": {
            **properties,
            "delivery_tag": PLACEHOLDER_ID,
            "delivery_info": {},
            "priority": priority or 0,
        },
    }
    return Entry(
        name=name,
        expression=expression(spec["schedule"], app),
        timezone=timezone,
        queue=lanes.lane_of(queue.name, priority),
        body=json.dumps(envelope, separators=(",", ":")),
    )


def sync(
    app: Celery,
    settings: Settings,
    *,
    scheduler: Any,
    sqs: Any,
    role_arn: str,
    remove: bool = False,
) -> tuple[list[Entry], list[str]]:
    """Make the group's schedules the app's entries; return them and the names deleted."""
    wanted = [] if remove else entries(app)
    group = group_name(settings)
    listed = scheduler.list_schedule_groups(NamePrefix=group).get("ScheduleGroups", [])
    if group not in {found["Name"] for found in listed}:
        scheduler.create_schedule_group(Name=group)
    for entry in wanted:
        name = settings.queue_prefix + entry.queue
        try:
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError as exc:
            raise ScheduleError(
                f"schedule {entry.name}: queue {name} does not exist (python -m deploy "
                f"provision --queue {entry.queue}): {exc}"
            ) from None
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
        target: dict[str, Any] = {
            "Arn": arn["QueueArn"],
            "RoleArn": role_arn,
            "Input": entry.body,
        }
        request = {
            "Name": entry.name,
            "GroupName": group,
            "ScheduleExpression": entry.expression,
            "ScheduleExpressionTimezone": entry.timezone,
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "Target": target,
            "State": "ENABLED",
            "Description": f"celery beat entry of {app.main}, sent to {entry.queue}",
        }
        try:
            scheduler.create_schedule(**request)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConflictException":
                raise
            scheduler.update_schedule(**request)
    names = {entry.name for entry in wanted}
    deleted: list[str] = []
    pages = scheduler.get_paginator("list_schedules").paginate(GroupName=group)
    for page in pages:
        for found in page.get("Schedules", []):
            if found["Name"] not in names:
                scheduler.delete_schedule(Name=found["Name"], GroupName=group)
                deleted.append(found["Name"])
    return wanted, deleted


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy schedules", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``schedules``'s arguments (``python -m deploy schedules``)."""
    parser.add_argument("--app", required=True, help="the Celery app's module (celery -A MODULE)")
    parser.add_argument(
        "--role-arn", required=True, help="the role EventBridge Scheduler sends with"
    )
    parser.add_argument(
        "--remove", action="store_true", help="delete every schedule of the group instead"
    )


def run(args: argparse.Namespace) -> int:
    """Sync the schedules; one line per schedule on stdout, one error line on stderr."""
    sys.path.insert(0, "")  # the app's module, from the current directory (celery -A's way)
    app = find_app(args.app)
    settings = Settings.from_conf(app.conf)
    try:
        made, deleted = sync(
            app,
            settings,
            scheduler=aws.client("scheduler", settings),
            sqs=aws.client("sqs", settings),
            role_arn=args.role_arn,
            remove=args.remove,
        )
    except ScheduleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for entry in made:
        print(f"schedule {group_name(settings)}/{entry.name}: {entry.expression} -> {entry.queue}")
    for name in deleted:
        print(f"deleted schedule {group_name(settings)}/{name}")
    return 0
