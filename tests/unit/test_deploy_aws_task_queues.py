"""The stack's queues beside ``tasks`` (``python -m deploy aws up --queue NAME``).

Each gets what ``tasks`` has in the template: a queue and a dead-letter queue, the
alarms that watch one queue, a share of the scaling's backlog and the wake-up
alarms, and the instances' grants. The expanded template must pass cfn-lint, as
the committed one does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.aws import task_queues
from deploy.aws.names import TEMPLATE
from tests.unit.test_deploy_aws_template import cfn_lint, wildcard_violations

T: dict[str, Any] = yaml.safe_load(TEMPLATE.read_text())
QUEUES = ("emails", "reports.fifo", "bulk_jobs")
E = task_queues.expand(T, QUEUES)
R: dict[str, Any] = E["Resources"]


def refs(value: Any) -> set[str]:
    """Every logical id ``value`` refers to (Ref, Fn::GetAtt)."""
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            found |= refs(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key == "Ref" and isinstance(item, str):
                found.add(item)
            elif key == "Fn::GetAtt":
                found.add(item[0])
            else:
                found |= refs(item)
    return found


def metrics(resource: dict[str, Any]) -> list[dict[str, Any]]:
    properties = resource["Properties"]
    spec = properties.get("TargetTrackingConfiguration", {}).get("CustomizedMetricSpecification")
    return list((spec or properties)["Metrics"])


def test_the_committed_template_is_the_expansion_of_no_queue() -> None:
    assert task_queues.expand(T, ()) == T
    assert T["Parameters"][task_queues.PARAMETER]["AllowedPattern"] == "^tasks$"


def test_the_expanded_template_passes_cfn_lint(tmp_path: Path) -> None:
    expanded = tmp_path / "expanded.json"
    expanded.write_text(json.dumps(E))
    done = cfn_lint("--include-checks", "I", "--", str(expanded))
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    assert wildcard_violations(E) == []


def test_each_queue_is_redriven_to_its_own_dead_letter_queue() -> None:
    expected = {
        "Emails": ("emails", "emails-dlq", False),
        "ReportsFifo": ("reports.fifo", "reports-dlq.fifo", True),
        "BulkJobs": ("bulk_jobs", "bulk_jobs-dlq", False),
    }
    for suffix, (name, dead, fifo) in expected.items():
        queue, dlq = (
            R[f"TaskQueue{suffix}"]["Properties"],
            R[f"DeadLetterQueue{suffix}"]["Properties"],
        )
        assert queue["QueueName"] == {"Fn::Sub": "${NamePrefix}" + name}
        assert dlq["QueueName"] == {"Fn::Sub": "${NamePrefix}" + dead}
        assert queue["RedrivePolicy"] == {
            "deadLetterTargetArn": {"Fn::GetAtt": [f"DeadLetterQueue{suffix}", "Arn"]},
            "maxReceiveCount": 5,
        }
        assert (queue.get("FifoQueue", False), dlq.get("FifoQueue", False)) == (fifo, fifo)
        # The rest as tasks has it: retention, visibility, long polls, encryption.
        same = {
            k: v for k, v in queue.items() if k not in ("QueueName", "RedrivePolicy", "FifoQueue")
        }
        assert same == {
            k: v
            for k, v in T["Resources"]["TaskQueue"]["Properties"].items()
            if k not in ("QueueName", "RedrivePolicy")
        }


def test_each_queue_has_its_own_copy_of_every_alarm_watching_one_queue() -> None:
    for alarm in task_queues.PER_QUEUE:
        watched = refs(T["Resources"][alarm]["Properties"]) & {"TaskQueue", "DeadLetterQueue"}
        assert watched, alarm  # the list names only alarms that watch a queue
        for name, suffix in (("emails", "Emails"), ("reports.fifo", "ReportsFifo")):
            copy = R[alarm + suffix]["Properties"]
            assert copy["AlarmDescription"].startswith(f"{name}: ")
            assert refs(copy) & {"TaskQueue", "DeadLetterQueue"} == set()
            assert {w + suffix for w in watched} <= refs(copy)
    # Every alarm on the default queue is either copied or adds up the queues.
    watching = {
        name
        for name, resource in T["Resources"].items()
        if resource["Type"] in ("AWS::CloudWatch::Alarm", "AWS::AutoScaling::ScalingPolicy")
        and refs(resource["Properties"]) & {"TaskQueue", "DeadLetterQueue"}
    }
    assert watching == set(task_queues.PER_QUEUE) | set(task_queues.SUMMED)


def test_scaling_and_wake_up_add_up_every_queue_within_cloudwatchs_ten_metrics() -> None:
    backlog = metrics(R["BacklogScaling"])
    assert len(backlog) == 10  # a CloudWatch alarm's most: hence at most 3 more queues
    (expression,) = [m["Expression"] for m in backlog if m.get("ReturnData")]
    for metric_id in ("visible", "inflight"):
        for n in ("", "1", "2", "3"):
            assert f"FILL({metric_id}{n}, 0)" in expression
    dimensions = {
        m["Id"]: m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]
        for m in backlog
        if "MetricStat" in m and m["MetricStat"]["Metric"]["Namespace"] == "AWS/SQS"
    }
    assert dimensions["visible2"] == {"Fn::GetAtt": ["TaskQueueReportsFifo", "QueueName"]}
    assert dimensions["inflight3"] == {"Fn::GetAtt": ["TaskQueueBulkJobs", "QueueName"]}
    for alarm in ("WakeFromZeroAlarm", "NoWorkerAlarm"):
        (expression,) = [m["Expression"] for m in metrics(R[alarm]) if m.get("ReturnData")]
        assert expression.startswith(
            "IF((FILL(visible, 0) + FILL(visible1, 0) + FILL(visible2, 0) + FILL(visible3, 0)) > 0"
        )


def test_the_instances_may_use_every_queue_and_the_worker_consumes_them() -> None:
    (policy,) = R["InstanceRole"]["Properties"]["Policies"]
    grants = {s.get("Sid"): s.get("Resource") for s in policy["PolicyDocument"]["Statement"]}
    assert grants["TaskQueue"] == [
        {"Fn::GetAtt": [f"TaskQueue{s}", "Arn"]} for s in ("", "Emails", "ReportsFifo", "BulkJobs")
    ]
    assert grants["DeadLetters"] == [
        {"Fn::GetAtt": [f"DeadLetterQueue{s}", "Arn"]}
        for s in ("", "Emails", "ReportsFifo", "BulkJobs")
    ]
    parameter = E["Parameters"][task_queues.PARAMETER]
    assert parameter["Default"] == "tasks,emails,reports.fifo,bulk_jobs"
    assert parameter["AllowedPattern"] == r"^tasks,emails,reports\.fifo,bulk_jobs$"


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        (["a,b,c,d"], "at most 3 queues beside tasks"),
        (["bad name"], "'bad name' cannot name a stack's queue"),
        (["x" * 57], "1 to 56 letters"),
        (["a-b", "a_b"], "differ only in '-', '_' or '.'"),
    ],
)
def test_a_list_the_stack_cannot_make_is_refused_with_the_reason(
    given: list[str], problem: str
) -> None:
    with pytest.raises(task_queues.QueueListError, match=problem.replace(".", r"\.")):
        task_queues.parse(given)


def test_tasks_and_repeats_are_left_out_of_the_others() -> None:
    assert task_queues.parse(["tasks,emails", "emails", " reports.fifo "]) == (
        "emails",
        "reports.fifo",
    )
    assert task_queues.parse(["tasks"]) == ()
    assert task_queues.from_parameter("tasks,emails") == ("emails",)
