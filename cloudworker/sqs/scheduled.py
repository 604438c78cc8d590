"""Task messages an EventBridge Scheduler schedule sends: a task id of their own each time.

A schedule (``python -m deploy schedules``, one per ``beat_schedule`` entry) sends
the same message every time it fires: its ``Input``, fixed when the schedule was
made. Celery needs a task id per run (results, states and revocations are keyed
by it, and a task whose result is already stored is not stored again), so such a
message carries the header :data:`SCHEDULE_HEADER`, the schedule's name, and the
worker gives it the id ``<schedule>-<SQS message id>`` when it receives it: new
for each firing, the same for each delivery of one firing (a redelivery is the
same run). EventBridge's own ``<aws.scheduler.execution-id>`` would do on AWS,
but the local endpoints do not fill it in.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["SCHEDULE_HEADER", "SCHEDULE_NAME", "scheduled_id"]

#: The header naming the schedule a message came from.
SCHEDULE_HEADER = "cloudworker_schedule"
#: A schedule's name, as EventBridge Scheduler allows it (and a task id can hold it).
SCHEDULE_NAME = re.compile(r"[0-9A-Za-z_.-]{1,64}")


def scheduled_id(payload: Any, message_id: Any) -> None:
    """Give a scheduled task message (a kombu envelope, decoded) its run's task id.

    Anything else is left as it is, and a header that is not a schedule's name
    too: the message is then checked as any other (its id is the schedule's
    placeholder, which admission refuses, naming it).
    """
    headers = payload.get("headers") if isinstance(payload, dict) else None
    if not isinstance(headers, dict) or not isinstance(message_id, str):
        return
    schedule = headers.get(SCHEDULE_HEADER)
    if not isinstance(schedule, str) or not SCHEDULE_NAME.fullmatch(schedule):
        return
    task_id = f"{schedule}-{message_id}"
    headers["id"] = headers["root_id"] = task_id
    properties = payload.get("properties")
    if isinstance(properties, dict):
        properties["correlation_id"] = task_id
