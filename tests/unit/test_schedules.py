"""A beat_schedule's entries as EventBridge Scheduler schedules (deploy/schedules.py), and the
worker's id for each firing of one (cloudworker/sqs/scheduled.py)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from celery import Celery
from celery.schedules import crontab, schedule

from cloudworker.sqs.scheduled import SCHEDULE_HEADER, scheduled_id
from deploy.schedules import PLACEHOLDER_ID, ScheduleError, entries, expression


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (crontab(), "cron(* * * * ? *)"),
        (crontab(minute="*/15"), "cron(0,15,30,45 * * * ? *)"),
        (crontab(minute=0, hour=7, day_of_week="mon-fri"), "cron(0 7 ? * MON,TUE,WED,THU,FRI *)"),
        (crontab(minute=30, hour=2, day_of_month=1), "cron(30 2 1 * ? *)"),
        (crontab(minute=0, hour=0, day_of_week=0), "cron(0 0 ? * SUN *)"),
        (crontab(minute=5, hour=4, month_of_year="1,7"), "cron(5 4 * 1,7 ? *)"),
        (60, "rate(1 minute)"),
        (300.0, "rate(5 minutes)"),
        (timedelta(hours=2), "rate(2 hours)"),
        (timedelta(days=1), "rate(1 day)"),
        (timedelta(minutes=90), "rate(90 minutes)"),
    ],
)
def test_a_schedule_has_the_eventbridge_expression_that_fires_when_beat_would(
    given: Any, expected: str
) -> None:
    assert expression(given) == expected


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        (2.0, "every 2 s: EventBridge Scheduler's intervals are whole minutes"),
        (timedelta(seconds=90), "every 90 s"),
        (crontab(day_of_month=1, day_of_week="mon"), "both day of month and day of week"),
        (type("Own", (schedule,), {})(60), "Own schedules have no EventBridge expression"),
    ],
)
def test_a_schedule_eventbridge_cannot_keep_is_refused_with_the_reason(
    given: Any, reason: str
) -> None:
    with pytest.raises(ScheduleError, match=reason.replace("(", r"\(")):
        expression(given)


def app_with(schedule: dict[str, Any], **conf: Any) -> Celery:
    app = Celery("shop", set_as_current=False)
    app.conf.update(beat_schedule=schedule, **conf)
    return app


def test_an_entry_becomes_the_message_the_app_would_send_marked_as_scheduled() -> None:
    app = app_with(
        {
            "nightly report": {
                "task": "shop.report",
                "schedule": crontab(minute=0, hour=3),
                "args": (7,),
                "kwargs": {"full": True},
                "options": {"queue": "reports", "headers": {"team": "a"}},
            }
        },
        timezone="Europe/Paris",
    )
    (entry,) = entries(app)
    assert (entry.name, entry.expression, entry.timezone) == (
        "nightly-report",
        "cron(0 3 * * ? *)",
        "Europe/Paris",
    )
    assert entry.queue == "reports"
    envelope = json.loads(entry.body)
    headers = envelope["headers"]
    assert (headers["task"], headers["id"], headers[SCHEDULE_HEADER]) == (
        "shop.report",
        PLACEHOLDER_ID,
        "nightly-report",
    )
    assert headers["team"] == "a"
    assert envelope["content-type"] == "application/json"
    assert json.loads(envelope["body"]) == [
        [7],
        {"full": True},
        {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
    ]


def test_an_entrys_priority_goes_to_its_lane_on_a_queue_with_lanes() -> None:
    app = app_with(
        {"urgent": {"task": "shop.ping", "schedule": 60, "options": {"priority": 9}}},
        task_queue_max_priority=10,
        task_default_queue="tasks",
    )
    (entry,) = entries(app)
    assert entry.queue == "tasks-p9"


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"expires": 30}, "options expires would be fixed when the schedule is made"),
        ({"countdown": 5}, "options countdown would be fixed"),
    ],
)
def test_options_fixed_at_the_sync_are_refused_naming_the_entry(
    options: dict[str, Any], reason: str
) -> None:
    app = app_with({"tick": {"task": "shop.ping", "schedule": 60, "options": options}})
    with pytest.raises(ScheduleError, match=f"beat_schedule entry 'tick': {reason}"):
        entries(app)


def test_each_firing_gets_a_task_id_of_its_own_and_each_delivery_of_one_the_same() -> None:
    def fired() -> dict[str, Any]:
        return {
            "headers": {"id": PLACEHOLDER_ID, "root_id": PLACEHOLDER_ID, SCHEDULE_HEADER: "tick"},
            "properties": {"correlation_id": PLACEHOLDER_ID},
        }

    first, again, second = fired(), fired(), fired()
    scheduled_id(first, "m-1")
    scheduled_id(again, "m-1")
    scheduled_id(second, "m-2")
    assert first["headers"]["id"] == first["headers"]["root_id"] == "tick-m-1"
    assert first["properties"]["correlation_id"] == "tick-m-1"
    assert again == first and second["headers"]["id"] == "tick-m-2"


def test_a_message_without_a_schedules_name_keeps_its_id() -> None:
    plain = {"headers": {"id": "abc"}, "properties": {}}
    scheduled_id(plain, "m-1")
    hostile = {"headers": {"id": "abc", SCHEDULE_HEADER: "../x y"}, "properties": {}}
    scheduled_id(hostile, "m-1")
    assert plain["headers"]["id"] == hostile["headers"]["id"] == "abc"


def test_an_entry_for_a_fifo_queue_is_refused() -> None:
    app = app_with({"tick": {"task": "shop.ping", "schedule": 60, "options": {"queue": "o.fifo"}}})
    with pytest.raises(ScheduleError, match=r"queue o\.fifo is a FIFO queue"):
        entries(app)
