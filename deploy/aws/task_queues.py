"""The stack's task queues beyond ``tasks``: each with its dead-letter queue, alarms and scaling.

A plain CloudFormation template has no loop (``Fn::ForEach`` needs a transform
that moto's CloudFormation does not run), so ``python -m deploy aws up --queue
NAME`` adds each queue's resources to the parsed template before it is sent:

* the queue and its dead-letter queue, copies of ``TaskQueue`` and
  ``DeadLetterQueue`` under the queue's name (``<prefix><name>``,
  ``<prefix><name>-dlq``; a ``.fifo`` name makes both FIFO queues);
* a copy of each alarm that watches one queue (:data:`PER_QUEUE`), its description
  starting with the queue's name;
* the queue's backlog in the scaling policy and in the wake-up alarms, which add
  up every queue (:data:`SUMMED`): the workers consume them all;
* the queues in the instances' grants (``TaskQueue`` and ``DeadLetters``);
* the parameter :data:`PARAMETER`, the queues the worker unit consumes (``-Q``),
  allowed to be exactly this list: the committed template allows ``tasks`` alone,
  so the parameter can never name a queue the stack did not make.

Logical ids end in the queue's name made CamelCase (``reports.fifo``:
``TaskQueueReportsFifo``), so adding a queue later leaves the others' resources
as they were. A CloudWatch alarm reads at most 10 metrics: the backlog scaling
reads 4, and 2 per queue more, hence :data:`MOST`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

from cloudworker.queues import valid_task_queue_name
from cloudworker.settings import dead_letter_name
from deploy.aws.names import DEFAULTS

__all__ = ["MOST", "PARAMETER", "PER_QUEUE", "SUMMED", "QueueListError", "expand", "parse"]

#: The parameter naming the queues the workers consume (stack.env CLOUDWORKER_WORKER_QUEUES).
PARAMETER = "WorkerQueues"
#: Queues a stack may have beside ``tasks`` (a CloudWatch alarm reads at most 10 metrics).
MOST = 3
#: Alarms copied for each queue: they watch one queue or its dead-letter queue.
PER_QUEUE = (
    "DeadLetterQueueNotEmptyAlarm",
    "DeadLetterQueueGrowingAlarm",
    "ReceivedNotDeletedAlarm",
    "OldestMessageAlarm",
    "OldestMessageScalingAlarm",
)
#: Resources whose metric math adds up the queues: resource -> the metric ids summed.
SUMMED = {
    "BacklogScaling": ("visible", "inflight"),
    "WakeFromZeroAlarm": ("visible",),
    "NoWorkerAlarm": ("visible",),
}
#: The longest name a queue may have here: with the longest NamePrefix (20) and
#: "-dlq", 80 characters, SQS's limit.
_LONGEST = 56
_ORIGINALS = ("TaskQueue", "DeadLetterQueue")


class QueueListError(ValueError):
    """A list of queues the stack cannot make; the message says why."""


def parse(values: Sequence[str]) -> tuple[str, ...]:
    """The queues beside ``tasks`` named by ``--queue`` values (each may be a comma list)."""
    names: list[str] = []
    for value in values:
        names.extend(name.strip() for name in value.split(",") if name.strip())
    queues = tuple(dict.fromkeys(name for name in names if name != DEFAULTS.task_queue))
    for name in queues:
        if not valid_task_queue_name(name) or len(name) > _LONGEST:
            raise QueueListError(
                f"{name!r:.100} cannot name a stack's queue: 1 to {_LONGEST} letters, digits, "
                "'-' or '_' (then '.fifo' for a FIFO queue)"
            )
    if len(queues) > MOST:
        raise QueueListError(
            f"a stack has at most {MOST} queues beside {DEFAULTS.task_queue} (its backlog "
            f"scaling reads 2 metrics per queue, and a CloudWatch alarm reads at most 10); "
            f"got {len(queues)}"
        )
    suffixes = [_suffix(name) for name in queues]
    clashing = {s for s in suffixes if suffixes.count(s) > 1}
    if clashing:
        raise QueueListError(
            "queue names that differ only in '-', '_' or '.' cannot share a stack: "
            + ", ".join(name for name in queues if _suffix(name) in clashing)
        )
    return queues


def from_parameter(value: str) -> tuple[str, ...]:
    """The queues beside ``tasks`` in a stack's :data:`PARAMETER` value."""
    return parse([value])


def parameter_value(queues: Sequence[str]) -> str:
    """:data:`PARAMETER`'s value: ``tasks`` and the others, comma-separated."""
    return ",".join([DEFAULTS.task_queue, *queues])


def expand(template: dict[str, Any], queues: Sequence[str]) -> dict[str, Any]:
    """``template`` (parsed) with the resources of each of ``queues`` added."""
    result = copy.deepcopy(template)
    resources: dict[str, Any] = result["Resources"]
    parameter = result["Parameters"][PARAMETER]
    value = parameter_value(queues)
    parameter["Default"] = value
    parameter["AllowedPattern"] = "^" + re.escape(value) + "$"
    for index, name in enumerate(queues, start=1):
        suffix = _suffix(name)
        renamed = {original: original + suffix for original in _ORIGINALS}
        fifo = name.endswith(".fifo")
        dead = copy.deepcopy(resources["DeadLetterQueue"])
        dead["Properties"]["QueueName"] = {"Fn::Sub": "${NamePrefix}" + dead_letter_name(name)}
        queue = _renamed(resources["TaskQueue"], renamed)
        queue["Properties"]["QueueName"] = {"Fn::Sub": "${NamePrefix}" + name}
        if fifo:
            dead["Properties"]["FifoQueue"] = True
            queue["Properties"]["FifoQueue"] = True
        resources[renamed["DeadLetterQueue"]] = dead
        resources[renamed["TaskQueue"]] = queue
        for alarm in PER_QUEUE:
            copied = _renamed(resources[alarm], renamed)
            properties = copied["Properties"]
            properties["AlarmDescription"] = f"{name}: {properties['AlarmDescription']}"
            resources[alarm + suffix] = copied
        for summed, ids in SUMMED.items():
            _add_metrics(resources[summed], ids, index, renamed)
    if queues:
        for summed, ids in SUMMED.items():
            _sum_in_expressions(resources[summed], ids, len(queues))
    for statement in _statements(resources) if queues else ():
        if statement.get("Sid") in ("TaskQueue", "DeadLetters"):
            original = "TaskQueue" if statement["Sid"] == "TaskQueue" else "DeadLetterQueue"
            statement["Resource"] = [
                {"Fn::GetAtt": [original + _suffix(name), "Arn"]} for name in ("", *queues)
            ]
    return result


def _suffix(name: str) -> str:
    """``reports.fifo`` -> ``ReportsFifo``: what a queue's logical ids end with."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name))


def _renamed(resource: Any, renamed: dict[str, str]) -> Any:
    """A copy of ``resource`` whose references (Ref, Fn::GetAtt) to queues point at their copies."""
    if isinstance(resource, list):
        return [_renamed(item, renamed) for item in resource]
    if not isinstance(resource, dict):
        return resource
    out: dict[str, Any] = {}
    for key, value in resource.items():
        if key == "Ref" and isinstance(value, str):
            out[key] = renamed.get(value, value)
        elif key == "Fn::GetAtt" and isinstance(value, list) and value:
            out[key] = [renamed.get(value[0], value[0]), *value[1:]]
        else:
            out[key] = _renamed(value, renamed)
    return out


def _metrics(resource: dict[str, Any]) -> list[dict[str, Any]]:
    properties = resource["Properties"]
    spec = properties.get("TargetTrackingConfiguration", {}).get("CustomizedMetricSpecification")
    metrics: list[dict[str, Any]] = (spec or properties)["Metrics"]
    return metrics


def _add_metrics(
    resource: dict[str, Any], ids: Sequence[str], index: int, renamed: dict[str, str]
) -> None:
    """Add the queue's copies (``<id><index>``) of ``resource``'s metrics ``ids``."""
    metrics = _metrics(resource)
    by_id = {metric["Id"]: metric for metric in metrics}
    for metric_id in ids:
        added = _renamed(by_id[metric_id], renamed)
        added["Id"] = f"{metric_id}{index}"
        added.pop("Label", None)
        metrics.insert(len(metrics) - 1, added)


def _sum_in_expressions(resource: dict[str, Any], ids: Sequence[str], count: int) -> None:
    """Each of ``ids`` in the metric math becomes the sum over the queues.

    Each term is filled with 0: SQS stops reporting a queue idle for 6 hours, and a
    sum with a term missing is missing (the default queue idle, another busy, and no
    worker would wake).
    """
    for metric in _metrics(resource):
        expression = metric.get("Expression")
        if not isinstance(expression, str):
            continue
        for metric_id in ids:
            terms = [f"FILL({metric_id}{n or ''}, 0)" for n in range(count + 1)]
            expression = re.sub(rf"\b{metric_id}\b", "(" + " + ".join(terms) + ")", expression)
        metric["Expression"] = expression


def _statements(resources: dict[str, Any]) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for policy in resources["InstanceRole"]["Properties"]["Policies"]:
        statements.extend(policy["PolicyDocument"]["Statement"])
    return statements
