"""The AWS stack's template, checked without deploying it (deploy/aws/cloudworker.yaml).

* cfn-lint passes, informational checks included;
* IAM: no wildcard action anywhere, and no wildcard resource beyond the few the
  design names (per-process queue prefixes, the prefix's topics, the bucket's
  prefixes, and ListQueues, which AWS authorises only on the account's queues);
* the template agrees with the local provisioning (deploy/provision.py) and
  the settings (config) on names, redrive, lifecycle, policies, notification;
* the generated user data equals a fresh render of deploy/userdata.sh and the
  units, and the units run what the local stack runs;
* what moto's CloudFormation does not implement (queue and bucket policies,
  scaling policies, alarms, the lifecycle hook, the alarm subscription, the
  bucket's notification, lifecycle and public access block) is checked here,
  on the template itself: each alarm's metric, statistic, period, threshold and
  actions; the drain hook's timeout against the worker unit's stop timeout;
* the drain agent and the exporter start on their nodes only (the user data's
  start step, run with a stand-in systemctl);
* the small pure helpers of the deploy command (parameters, env file, secret);
* the optional parts (issue #27): a customer managed KMS key, a base prefix of
  every S3 key, VPC endpoints, each absent with its parameter's default; the
  alarms on tasks received but not deleted and on new dead letters.

The template's size, as sent (without its comments), is checked in
test_deploy_aws_compact.py.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from celery.utils.nodenames import host_format

from cloudworker import queues
from cloudworker.settings import Settings
from deploy import local, provision
from deploy.aws import drain, envfile, render, secret, stack
from deploy.aws.names import DEFAULTS, FLOWER_PORT, ROLE_TAG, TEMPLATE, password_parameter

TEMPLATE_TEXT = TEMPLATE.read_text()
T: dict[str, Any] = yaml.safe_load(TEMPLATE_TEXT)
RESOURCES: dict[str, Any] = T["Resources"]
ACCOUNT_ARN = "arn:${AWS::Partition}:{service}:${AWS::Region}:${AWS::AccountId}:"
SQS = ACCOUNT_ARN.replace("{service}", "sqs")
SNS = ACCOUNT_ARN.replace("{service}", "sns")
#: The only resources an Allow statement may name with a wildcard.
ALLOWED_WILDCARDS = {
    SQS + "${NamePrefix}resp-*",
    SQS + "${NamePrefix}rx-*",
    SNS + "${NamePrefix}*",
    "${Bucket.Arn}/${KeyPrefix}payloads/*",
    "${Bucket.Arn}/${KeyPrefix}results/*",
    "${Bucket.Arn}/${KeyPrefix}revoked/*",
    "${Bucket.Arn}/${KeyPrefix}groups/*",
    "${Bucket.Arn}/${KeyPrefix}chords/*",
    "${Bucket.Arn}/${KeyPrefix}inbox/*",
    "${Bucket.Arn}/${KeyPrefix}outbox/*",
    "${Bucket.Arn}/releases/*",  # at the root: `up` uploads it, whatever KeyPrefix is
}
#: The S3 prefixes cloudworker writes under KeyPrefix, with what the role may do there.
DATA_PREFIXES = ("payloads/", "results/", "revoked/", "groups/", "chords/")
#: Actions AWS authorises on nothing narrower, as (actions, resource): ListQueues on
#: the account's queue namespace; DescribeAutoScalingInstances and PutMetricData on
#: "*" (the latter narrowed by a namespace condition); CompleteLifecycleAction on the
#: account's groups, narrowed by the stack's tag (the group's ARN would be circular).
WIDE_GRANTS = {
    (("sqs:ListQueues",), SQS + "*"),
    (("autoscaling:DescribeAutoScalingInstances",), "*"),
    (("cloudwatch:PutMetricData",), "*"),
    (
        ("autoscaling:CompleteLifecycleAction",),
        "arn:${AWS::Partition}:autoscaling:${AWS::Region}:${AWS::AccountId}:"
        "autoScalingGroup:*:autoScalingGroupName/*",
    ),
}
#: What the monitoring transport needs of SNS (the contract with cloudworker/sqs/fanout.py).
SNS_ACTIONS = {
    "sns:CreateTopic",
    "sns:Publish",
    "sns:Subscribe",
    "sns:Unsubscribe",
    "sns:ListSubscriptionsByTopic",
    "sns:GetTopicAttributes",
    "sns:TagResource",
}
#: What a process does with its own response or receiver queue.
PROCESS_QUEUE_ACTIONS = {
    "sqs:CreateQueue",
    "sqs:DeleteQueue",
    "sqs:TagQueue",
    "sqs:SendMessage",
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:SetQueueAttributes",
    "sqs:ChangeMessageVisibility",
}
#: The resource types moto's CloudFormation skips (see deploy/aws/README.md).
NOT_IN_MOTO = {
    "AWS::SQS::QueuePolicy",
    "AWS::S3::BucketPolicy",
    "AWS::AutoScaling::ScalingPolicy",
    "AWS::AutoScaling::LifecycleHook",
    "AWS::CloudWatch::Alarm",
    "AWS::SNS::Subscription",
}
#: CLOUDWORKER_SHUTDOWN_GRACE's default: the worker's warm shutdown lets running
#: tasks finish this long, which the unit's TimeoutStopSec must hold.
DEFAULT_SHUTDOWN_GRACE = 540
#: The alarms that mail someone (AlarmTopic); the others drive scaling.
NOTIFYING_ALARMS = {
    "DeadLetterQueueNotEmptyAlarm",
    "DeadLetterQueueGrowingAlarm",
    "ReceivedNotDeletedAlarm",
    "OldestMessageAlarm",
    "NoWorkerAlarm",
    "TaskErrorRateAlarm",
}
SCALING_ALARMS = {
    "WakeFromZeroAlarm": "WakeFromZeroScaling",
    "OldestMessageScalingAlarm": "OldestMessageScaling",
}


POLICY_TYPES = {
    "AWS::IAM::Policy",
    "AWS::IAM::ManagedPolicy",
    "AWS::SQS::QueuePolicy",
    "AWS::S3::BucketPolicy",
    "AWS::SNS::TopicPolicy",
}


def cfn_lint(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from cfnlint.runner import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def resource_string(value: Any) -> str:
    """A policy resource as one comparable string: Sub text, or ${X.Arn} for GetAtt."""
    if isinstance(value, str):
        return value
    if "Fn::Sub" in value:
        return str(value["Fn::Sub"])
    if "Fn::GetAtt" in value:
        name, attribute = value["Fn::GetAtt"]
        return f"${{{name}.{attribute}}}"
    if "Ref" in value:
        return f"${{{value['Ref']}}}"
    raise AssertionError(f"unexpected resource expression {value!r}")


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def policy_documents(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every policy document of the template, named by where it is."""
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        kind = resource["Type"]
        if kind == "AWS::IAM::Role":
            yield f"{name}.AssumeRolePolicyDocument", props["AssumeRolePolicyDocument"]
            for policy in props.get("Policies", []):
                yield f"{name}.{policy['PolicyName']}", policy["PolicyDocument"]
        elif kind in POLICY_TYPES:
            yield name, props["PolicyDocument"]


NO_VALUE = {"Ref": "AWS::NoValue"}


def statements_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    """A policy's statements, each branch of a conditional one (``Fn::If``) included."""
    found: list[dict[str, Any]] = []
    for statement in as_list(document["Statement"]):
        if "Fn::If" in statement:
            _, *branches = statement["Fn::If"]
            found += [branch for branch in branches if branch != NO_VALUE]
        else:
            found.append(statement)
    return found


def wildcard_violations(template: dict[str, Any]) -> list[str]:
    """Allow statements granting a wildcard action, or a resource beyond the allowed ones."""
    found: list[str] = []
    for where, document in policy_documents(template):
        for statement in statements_of(document):
            if statement["Effect"] != "Allow":
                continue  # a Deny with wildcards only takes away
            label = f"{where}/{statement.get('Sid', '?')}"
            if "NotAction" in statement or "NotResource" in statement:
                found.append(f"{label}: NotAction/NotResource in an Allow")
            actions = sorted(as_list(statement.get("Action", [])))
            found += [f"{label}: wildcard action {a}" for a in actions if "*" in a]
            principal = statement.get("Principal")
            if principal == "*" or (isinstance(principal, dict) and "*" in principal.values()):
                found.append(f"{label}: any principal")
            for raw in as_list(statement.get("Resource", [])):
                resource = resource_string(raw)
                if "*" not in resource or resource in ALLOWED_WILDCARDS:
                    continue
                if (tuple(actions), resource) in WIDE_GRANTS:
                    continue
                found.append(f"{label}: wildcard resource {resource}")
    return found


def role_statements() -> dict[str, dict[str, Any]]:
    role = RESOURCES["InstanceRole"]["Properties"]
    (policy,) = role["Policies"]
    return {s["Sid"]: s for s in statements_of(policy["PolicyDocument"])}


SINGLE_METRIC_KEYS = (
    "Namespace",
    "MetricName",
    "Dimensions",
    "Statistic",
    "Period",
    "Threshold",
    "ComparisonOperator",
    "EvaluationPeriods",
    "DatapointsToAlarm",
)


def alarm(name: str) -> dict[str, Any]:
    """An alarm's properties; asserts it is one."""
    assert RESOURCES[name]["Type"] == "AWS::CloudWatch::Alarm"
    return dict(RESOURCES[name]["Properties"])


def single_metric(props: dict[str, Any]) -> dict[str, Any]:
    """What a single-metric alarm watches and how, comparable as one dict."""
    return {key: props[key] for key in SINGLE_METRIC_KEYS}


def math_metrics(props: dict[str, Any]) -> dict[str, Any]:
    """A metric-math alarm's metrics by id: (namespace, name, dimensions, stat, period)."""
    found: dict[str, Any] = {}
    for metric in props["Metrics"]:
        if "MetricStat" in metric:
            stat_ = metric["MetricStat"]
            inner = stat_["Metric"]
            found[metric["Id"]] = (
                inner["Namespace"],
                inner["MetricName"],
                inner["Dimensions"],
                stat_["Stat"],
                stat_["Period"],
            )
        else:
            found[metric["Id"]] = metric["Expression"]
    return found


def conditions(**given: str) -> dict[str, bool]:
    """The template's conditions with these parameter values, the others at their defaults."""
    values = {name: p.get("Default") for name, p in T["Parameters"].items()} | given

    def value(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        ((function, argument),) = node.items()
        if function == "Ref":
            kind = T["Parameters"][argument]["Type"]
            raw = values[argument]
            return str(raw).split(",") if kind == "CommaDelimitedList" else str(raw)
        if function == "Fn::Join":
            delimiter, items = argument
            return delimiter.join(value(items))
        if function == "Condition":
            return truth(T["Conditions"][argument])
        return truth(node)

    def truth(node: dict[str, Any]) -> bool:
        ((function, argument),) = node.items()
        if function == "Fn::Equals":
            left, right = (value(a) for a in argument)
            return bool(left == right)
        if function == "Fn::Not":
            return not value(argument[0])
        if function == "Fn::And":
            return all(value(a) for a in argument)
        if function == "Fn::Or":
            return any(value(a) for a in argument)
        if function == "Condition":
            return truth(T["Conditions"][argument])
        raise AssertionError(f"unexpected condition {node!r}")

    return {name: truth(node) for name, node in T["Conditions"].items()}


def created(**given: str) -> set[str]:
    """The resources a stack with these parameter values has."""
    truth = conditions(**given)
    return {n for n, r in RESOURCES.items() if "Condition" not in r or truth[r["Condition"]]}


def resolved(node: Any, truth: dict[str, bool]) -> Any:
    """``node`` with each Fn::If decided by ``truth`` and AWS::NoValue left out."""
    if isinstance(node, list):
        values = [resolved(item, truth) for item in node]
        return [value for value in values if value != NO_VALUE]
    if not isinstance(node, dict):
        return node
    if set(node) == {"Fn::If"}:
        condition, when_true, when_false = node["Fn::If"]
        return resolved(when_true if truth[condition] else when_false, truth)
    items = {key: resolved(item, truth) for key, item in node.items()}
    return {key: item for key, item in items.items() if item != NO_VALUE}


def metric_math(expression: str, **series: float | None) -> float:
    """A CloudWatch metric-math expression's value at one point (its IF, FILL, AND)."""
    python = expression.replace(" AND ", " and ").replace(" OR ", " or ")
    functions = {
        "__builtins__": {},
        "IF": lambda condition, then, otherwise: then if condition else otherwise,
        "FILL": lambda v, default: default if v is None else v,
    }
    result: float = eval(python, functions, series)
    return result


def run_start_step(tmp_path: Path, role: str) -> list[str]:
    """The systemctl commands the rendered user data's start step runs for ``role``."""
    root, bin_dir = tmp_path / role / "root", tmp_path / role / "bin"
    bin_dir.mkdir(parents=True)
    calls = tmp_path / role / "systemctl.log"
    systemctl = bin_dir / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$*" >>{shlex.quote(str(calls))}\n')
    systemctl.chmod(0o755)
    script = tmp_path / role / "user-data"
    script.write_text(render.user_data(sample_values()))
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "CLOUDWORKER_BOOT_ROOT": str(root),
        "CLOUDWORKER_BOOT_STEPS": "start",
        "CLOUDWORKER_BOOT_ROLE": role,
    }
    done = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return calls.read_text().splitlines()


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(
        "\n".join(
            line
            for line in (render.DEPLOY_DIR / "systemd" / name).read_text().splitlines()
            if not line.startswith("EnvironmentFile=")  # repeated keys
        )
    )
    return parser


# -- lint -----------------------------------------------------------------------------


def test_cfn_lint_passes_with_informational_checks() -> None:
    done = cfn_lint("--include-checks", "I", "--", str(TEMPLATE))
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_cfn_lint_fails_on_a_broken_template(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(TEMPLATE_TEXT.replace("VisibilityTimeout: 300", "VisibilityTimeout: 99999"))
    done = cfn_lint("--", str(broken))
    assert done.returncode != 0 and "E3034 99999 is greater than the maximum" in done.stdout


def test_user_data_fits_ec2s_limit() -> None:
    # The template's own limit applies to what is sent: test_deploy_aws_compact.py.
    script = render.user_data(sample_values())
    assert len(script.encode()) < 16 * 1024  # EC2's user-data limit, before base64


# -- IAM: least privilege ----------------------------------------------------------------


def test_no_wildcard_action_and_no_wildcard_resource_beyond_the_listed_ones() -> None:
    assert wildcard_violations(T) == []


def test_the_wildcard_check_fails_on_a_broad_grant() -> None:
    broad = yaml.safe_load(TEMPLATE_TEXT)
    statements = broad["Resources"]["InstanceRole"]["Properties"]["Policies"][0]
    statements["PolicyDocument"]["Statement"] += [
        {"Sid": "Everything", "Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Sid": "AnyObject", "Effect": "Allow", "Action": "s3:*", "Resource": "${Bucket.Arn}/*"},
        {"Sid": "AnyQueue", "Effect": "Allow", "Action": "sqs:SendMessage", "Resource": SQS + "*"},
    ]
    assert wildcard_violations(broad) == [
        "InstanceRole.cloudworker/Everything: wildcard action *",
        "InstanceRole.cloudworker/Everything: wildcard resource *",
        "InstanceRole.cloudworker/AnyObject: wildcard action s3:*",
        "InstanceRole.cloudworker/AnyObject: wildcard resource ${Bucket.Arn}/*",
        "InstanceRole.cloudworker/AnyQueue: wildcard resource " + SQS + "*",
    ]


def test_the_role_is_assumed_by_ec2_only() -> None:
    trust = RESOURCES["InstanceRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]
    assert "ManagedPolicyArns" not in RESOURCES["InstanceRole"]["Properties"]


def test_project_queues_are_granted_by_their_own_arns() -> None:
    statements = role_statements()
    assert statements["TaskQueue"]["Resource"] == {"Fn::GetAtt": ["TaskQueue", "Arn"]}
    assert statements["InboxEvents"]["Resource"] == {"Fn::GetAtt": ["InboxQueue", "Arn"]}
    assert statements["DeadLetters"]["Resource"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    assert "sqs:CreateQueue" not in statements["TaskQueue"]["Action"]
    assert "sqs:SendMessage" not in statements["InboxEvents"]["Action"]


def test_process_queues_only_under_their_prefixes() -> None:
    statement = role_statements()["ProcessQueues"]
    settings = Settings(queue_prefix="${NamePrefix}")
    assert [resource_string(r) for r in statement["Resource"]] == [
        SQS + settings.response_queue_prefix + "*",
        SQS + settings.receiver_queue_prefix + "*",
    ]
    assert set(statement["Action"]) >= PROCESS_QUEUE_ACTIONS


def test_topics_only_under_the_prefix_with_the_monitoring_actions() -> None:
    statement = role_statements()["Topics"]
    assert resource_string(statement["Resource"]) == SNS + "${NamePrefix}*"
    assert set(statement["Action"]) == SNS_ACTIONS
    allowed = [s for s in role_statements().values() if s["Effect"] == "Allow"]
    granted = {a for s in allowed for a in as_list(s["Action"])}
    assert {a for a in granted if a.startswith("sns:")} == SNS_ACTIONS
    # The alarm topic's generated name (<stack>-AlarmTopic-...) can match the prefix.
    deny = role_statements()["NotTheAlarmTopic"]
    assert (deny["Effect"], deny["Action"], deny["Resource"]) == (
        "Deny",
        "sns:*",
        {"Ref": "AlarmTopic"},
    )


def test_objects_by_prefix_and_nothing_to_delete_in_the_inbox() -> None:
    statements = role_statements()
    assert [resource_string(r) for r in statements["PayloadsAndResults"]["Resource"]] == [
        f"${{Bucket.Arn}}/${{KeyPrefix}}{prefix}*" for prefix in DATA_PREFIXES
    ]
    assert statements["ReadInboxAndReleases"]["Action"] == "s3:GetObject"
    assert [resource_string(r) for r in statements["ReadInboxAndReleases"]["Resource"]] == [
        "${Bucket.Arn}/${KeyPrefix}" + DEFAULTS.inbox_prefix + "*",
        "${Bucket.Arn}/releases/*",
    ]
    assert resource_string(statements["WriteOutbox"]["Resource"]) == (
        "${Bucket.Arn}/${KeyPrefix}" + DEFAULTS.outbox_prefix + "*"
    )
    assert statements["ListBucket"]["Resource"] == {"Fn::GetAtt": ["Bucket", "Arn"]}


def test_flower_password_is_readable_by_its_own_arn_only() -> None:
    statement = role_statements()["FlowerPassword"]
    assert statement["Action"] == "ssm:GetParameter"
    assert resource_string(statement["Resource"]) == (
        ACCOUNT_ARN.replace("{service}", "ssm")
        + "parameter"
        + password_parameter("${AWS::StackName}")
    )
    outputs = T["Outputs"]["FlowerPasswordParameter"]["Value"]
    assert resource_string(outputs) == password_parameter("${AWS::StackName}")


# -- agreement with the local provisioning and the settings -------------------------------


def test_queue_names_and_attributes_match_the_settings() -> None:
    settings = Settings(queue_prefix="${NamePrefix}")
    props = {name: RESOURCES[name]["Properties"] for name in RESOURCES}
    assert props["TaskQueue"]["QueueName"] == {"Fn::Sub": settings.task_queue_name}
    assert props["DeadLetterQueue"]["QueueName"] == {"Fn::Sub": settings.dead_letter_queue_name}
    assert props["InboxQueue"]["QueueName"] == {"Fn::Sub": settings.inbox_queue_name}
    assert props["TaskQueue"]["VisibilityTimeout"] == DEFAULTS.visibility_timeout
    assert props["TaskQueue"]["ReceiveMessageWaitTimeSeconds"] == DEFAULTS.wait_seconds
    assert props["DeadLetterQueue"]["MessageRetentionPeriod"] == 1209600
    for queue in ("TaskQueue", "InboxQueue"):
        assert props[queue]["RedrivePolicy"] == {
            "deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
            "maxReceiveCount": queues.MAX_RECEIVE_COUNT,
        }
    assert T["Outputs"]["TaskQueue"]["Value"] == DEFAULTS.task_queue
    assert T["Outputs"]["VisibilityTimeout"]["Value"] == str(DEFAULTS.visibility_timeout)
    default_days = T["Parameters"]["ResultExpiryDays"]["Default"]
    assert default_days == DEFAULTS.result_expiry_days


def test_bucket_is_private_encrypted_and_expires_like_the_provisioning() -> None:
    bucket = RESOURCES["Bucket"]["Properties"]
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    condition, _, without_key = rule["Fn::If"]
    assert condition == "HasKmsKey"  # the other branch: test_a_kms_key_encrypts_...
    assert without_key == {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    # With KeyPrefix's default, "" (the other values: test_a_key_prefix_...).
    as_api = [
        {
            "ID": r["Id"],
            "Filter": {"Prefix": r["Prefix"]["Fn::Sub"].replace("${KeyPrefix}", "")},
            "Status": r["Status"],
            "Expiration": {"Days": r["ExpirationInDays"]},
            "AbortIncompleteMultipartUpload": r["AbortIncompleteMultipartUpload"],
        }
        for r in bucket["LifecycleConfiguration"]["Rules"]
    ]
    days = {"Ref": "ResultExpiryDays"}
    assert as_api == [
        provision._expiry_rule("expire-payloads", "payloads/", provision.PAYLOAD_EXPIRY_DAYS),
        provision._expiry_rule("expire-results", "results/", days),  # type: ignore[arg-type]
        provision._expiry_rule("expire-groups", "groups/", days),  # type: ignore[arg-type]
        provision._expiry_rule("expire-chords", "chords/", days),  # type: ignore[arg-type]
        provision._expiry_rule("expire-revoked", "revoked/", provision.REVOKED_EXPIRY_DAYS),
    ]


def test_bucket_policy_refuses_plain_http_as_the_provisioning_does() -> None:
    policy = RESOURCES["BucketPolicy"]["Properties"]["PolicyDocument"]
    expected = provision._https_only("BUCKET")
    resources = [resource_string(r) for r in policy["Statement"][0]["Resource"]]
    assert resources == ["${Bucket.Arn}", "${Bucket.Arn}/*"]
    statement = dict(policy["Statement"][0], Resource=expected["Statement"][0]["Resource"])
    assert dict(policy, Statement=[statement]) == expected


def test_inbox_notification_and_queue_policy_match_the_provisioning() -> None:
    bucket = RESOURCES["Bucket"]
    (config,) = bucket["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    inbox = {"Fn::Sub": "${KeyPrefix}" + DEFAULTS.inbox_prefix}
    assert config == {
        "Event": "s3:ObjectCreated:*",
        "Queue": {"Fn::GetAtt": ["InboxQueue", "Arn"]},
        "Filter": {"S3Key": {"Rules": [{"Name": "prefix", "Value": inbox}]}},
    }
    assert bucket["DependsOn"] == "InboxQueuePolicy"  # S3 checks it when told to notify
    policy = RESOURCES["InboxQueuePolicy"]["Properties"]
    assert policy["Queues"] == [{"Ref": "InboxQueue"}]
    (statement,) = policy["PolicyDocument"]["Statement"]
    bucket_name = bucket["Properties"]["BucketName"]["Fn::Sub"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {
        "ArnEquals": {"aws:SourceArn": {"Fn::Sub": "arn:${AWS::Partition}:s3:::" + bucket_name}}
    }


# -- scaling and Flower (parts moto does not run) -------------------------------------------


def test_moto_gaps_are_the_documented_ones() -> None:
    kinds = {r["Type"] for r in RESOURCES.values()}
    assert kinds & NOT_IN_MOTO == NOT_IN_MOTO
    readme = (TEMPLATE.parent / "README.md").read_text()
    assert all(kind in readme for kind in NOT_IN_MOTO)


def test_workers_scale_on_the_backlog_per_in_service_worker() -> None:
    policy = RESOURCES["BacklogScaling"]["Properties"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    tracking = policy["TargetTrackingConfiguration"]
    assert tracking["TargetValue"] == {"Ref": "TargetBacklogPerWorker"}
    metrics = {m["Id"]: m for m in tracking["CustomizedMetricSpecification"]["Metrics"]}
    workers = metrics["workers"]["MetricStat"]["Metric"]
    # Visible and in flight: messages a stuck worker holds are backlog too.
    for name, metric_name in (
        ("visible", "ApproximateNumberOfMessagesVisible"),
        ("inflight", "ApproximateNumberOfMessagesNotVisible"),
    ):
        stat_ = metrics[name]["MetricStat"]
        assert stat_["Stat"] == "Sum"
        assert stat_["Metric"] == {
            "Namespace": "AWS/SQS",
            "MetricName": metric_name,
            "Dimensions": [
                {"Name": "QueueName", "Value": {"Fn::GetAtt": ["TaskQueue", "QueueName"]}}
            ],
        }
    assert (workers["Namespace"], workers["MetricName"]) == (
        "AWS/AutoScaling",
        "GroupInServiceInstances",
    )
    assert workers["Dimensions"] == [
        {"Name": "AutoScalingGroupName", "Value": {"Ref": "WorkerGroup"}}
    ]
    assert metrics["backlog"] == {
        "Id": "backlog",
        "Label": "Backlog per worker",
        "Expression": "(visible + inflight) / workers",
        "ReturnData": True,
    }
    assert [m["ReturnData"] for m in metrics.values()] == [False, False, False, True]
    group = RESOURCES["WorkerGroup"]["Properties"]
    assert group["MetricsCollection"] == [
        {"Granularity": "1Minute", "Metrics": ["GroupInServiceInstances"]}
    ]
    assert group["DefaultInstanceWarmup"] >= 180
    assert (group["MinSize"], group["MaxSize"]) == ({"Ref": "MinWorkers"}, {"Ref": "MaxWorkers"})
    assert "DesiredCapacity" not in group  # an update must not reset what scaling decided


def test_an_empty_group_wakes_up_when_tasks_wait() -> None:
    alarm = RESOURCES["WakeFromZeroAlarm"]["Properties"]
    assert alarm["AlarmActions"] == [{"Ref": "WakeFromZeroScaling"}]
    (expression,) = [m for m in alarm["Metrics"] if m["ReturnData"]]
    assert expression["Expression"] == "IF(visible > 0 AND FILL(workers, 0) < 1, 1, 0)"
    wake = RESOURCES["WakeFromZeroScaling"]["Properties"]
    assert wake["StepAdjustments"] == [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}]


def test_every_alarm_is_either_a_scaling_trigger_or_mails_the_alarm_topic() -> None:
    alarms = {n for n, r in RESOURCES.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert alarms == NOTIFYING_ALARMS | set(SCALING_ALARMS)
    topic = [{"Ref": "AlarmTopic"}]
    for name in NOTIFYING_ALARMS:
        props = alarm(name)
        assert (props["AlarmActions"], props["OKActions"]) == (topic, topic), name
    for name, policy in SCALING_ALARMS.items():
        props = alarm(name)
        assert props["AlarmActions"] == [{"Ref": policy}] and "OKActions" not in props
    # Chosen, not defaulted: missing SQS data is an idle queue, missing task counts
    # are no exporter; neither is evidence of trouble.
    for name in alarms:
        assert alarm(name)["TreatMissingData"] == "notBreaching", name
    assert RESOURCES["AlarmTopic"]["Type"] == "AWS::SNS::Topic"
    assert T["Outputs"]["AlarmTopic"]["Value"] == {"Ref": "AlarmTopic"}


def test_the_email_subscription_exists_only_with_an_address() -> None:
    subscription = RESOURCES["AlarmSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"] == {
        "TopicArn": {"Ref": "AlarmTopic"},
        "Protocol": "email",
        "Endpoint": {"Ref": "AlarmEmail"},
    }
    assert T["Conditions"]["HasAlarmEmail"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]
    }
    parameter = T["Parameters"]["AlarmEmail"]
    assert (parameter["Type"], parameter["Default"]) == ("String", "")
    pattern = re.compile(parameter["AllowedPattern"])
    assert pattern.fullmatch("") and pattern.fullmatch("ops@example.com")
    assert not pattern.fullmatch("ops") and not pattern.fullmatch("o ps@example.com")


def test_dead_letters_raise_an_alarm_at_once() -> None:
    assert single_metric(alarm("DeadLetterQueueNotEmptyAlarm")) == {
        "Namespace": "AWS/SQS",
        "MetricName": "ApproximateNumberOfMessagesVisible",
        "Dimensions": [
            {"Name": "QueueName", "Value": {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}}
        ],
        "Statistic": "Maximum",
        "Period": 60,
        "Threshold": 1,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "EvaluationPeriods": 1,
        "DatapointsToAlarm": 1,
    }


def test_tasks_waiting_too_long_raise_an_alarm_after_five_minutes() -> None:
    assert single_metric(alarm("OldestMessageAlarm")) == {
        "Namespace": "AWS/SQS",
        "MetricName": "ApproximateAgeOfOldestMessage",
        "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["TaskQueue", "QueueName"]}}],
        "Statistic": "Maximum",
        "Period": 60,
        "Threshold": {"Ref": "OldestMessageAlarmAge"},
        "ComparisonOperator": "GreaterThanThreshold",
        "EvaluationPeriods": 5,
        "DatapointsToAlarm": 5,
    }
    assert T["Parameters"]["OldestMessageAlarmAge"]["Default"] == 900


def test_a_failed_wake_up_raises_an_alarm_after_ten_minutes() -> None:
    props = alarm("NoWorkerAlarm")
    wake = alarm("WakeFromZeroAlarm")
    assert props["Metrics"] == wake["Metrics"]  # the same condition, held longer
    metrics = math_metrics(props)
    assert metrics["visible"] == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["TaskQueue", "QueueName"]}}],
        "Maximum",
        60,
    )
    assert metrics["workers"] == (
        "AWS/AutoScaling",
        "GroupInServiceInstances",
        [{"Name": "AutoScalingGroupName", "Value": {"Ref": "WorkerGroup"}}],
        "Maximum",
        60,
    )
    assert metrics["idle"] == "IF(visible > 0 AND FILL(workers, 0) < 1, 1, 0)"
    assert (props["Threshold"], props["ComparisonOperator"]) == (
        1,
        "GreaterThanOrEqualToThreshold",
    )
    assert (props["EvaluationPeriods"], props["DatapointsToAlarm"]) == (10, 10)
    assert (wake["EvaluationPeriods"], wake["DatapointsToAlarm"]) == (1, 1)


def test_the_task_error_rate_reads_the_exporters_counts_of_this_stack() -> None:
    props = alarm("TaskErrorRateAlarm")
    stack_dimension = [{"Name": "Stack", "Value": {"Ref": "AWS::StackName"}}]
    metrics = math_metrics(props)
    assert metrics["succeeded"] == ("cloudworker", "TasksSucceeded", stack_dimension, "Sum", 300)
    assert metrics["failed"] == ("cloudworker", "TasksFailed", stack_dimension, "Sum", 300)
    # No division by zero: a period without tasks is 0%, not an error.
    assert metrics["finished"] == "FILL(succeeded, 0) + FILL(failed, 0)"
    assert metrics["rate"] == "IF(finished > 0, 100 * FILL(failed, 0) / finished, 0)"
    returned = [m["Id"] for m in props["Metrics"] if m["ReturnData"]]
    assert returned == ["rate"]
    assert (props["Threshold"], props["ComparisonOperator"]) == (
        {"Ref": "TaskErrorRatePercent"},
        "GreaterThanThreshold",
    )
    assert (props["EvaluationPeriods"], props["DatapointsToAlarm"]) == (3, 2)
    assert T["Parameters"]["TaskErrorRatePercent"]["Default"] == 5
    # The exporter publishes under the stack's name, from stack.env.
    start = shlex.split(unit("cloudworker-exporter.service")["Service"]["ExecStart"])
    assert start[1:3] == ["-m", "deploy.exporter"]
    assert start[start.index("--cloudwatch-stack") + 1] == "${CLOUDWORKER_STACK_NAME}"
    assert render.STACK_ENV["CLOUDWORKER_STACK_NAME"] == "${AWS::StackName}"
    statement = role_statements()["PutMetricData"]
    assert (statement["Action"], statement["Resource"]) == ("cloudwatch:PutMetricData", "*")
    assert statement["Condition"] == {"StringEquals": {"cloudwatch:namespace": "cloudworker"}}


def test_workers_are_added_when_the_oldest_task_waits() -> None:
    props = alarm("OldestMessageScalingAlarm")
    assert single_metric(props) == {
        "Namespace": "AWS/SQS",
        "MetricName": "ApproximateAgeOfOldestMessage",
        "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["TaskQueue", "QueueName"]}}],
        "Statistic": "Maximum",
        "Period": 60,
        "Threshold": {"Ref": "ScaleOutOldestMessageAge"},
        "ComparisonOperator": "GreaterThanThreshold",
        "EvaluationPeriods": 2,
        "DatapointsToAlarm": 2,
    }
    policy = RESOURCES["OldestMessageScaling"]["Properties"]
    assert policy["AutoScalingGroupName"] == {"Ref": "WorkerGroup"}
    assert (policy["PolicyType"], policy["AdjustmentType"]) == ("StepScaling", "ChangeInCapacity")
    # Bounds are relative to the threshold: +1 above it, +2 from twice it.
    age = {"Ref": "ScaleOutOldestMessageAge"}
    assert policy["StepAdjustments"] == [
        {"MetricIntervalLowerBound": 0, "MetricIntervalUpperBound": age, "ScalingAdjustment": 1},
        {"MetricIntervalLowerBound": age, "ScalingAdjustment": 2},
    ]
    assert T["Parameters"]["ScaleOutOldestMessageAge"]["Default"] == 120
    assert RESOURCES["BacklogScaling"]["Properties"]["PolicyType"] == "TargetTrackingScaling"


# -- scale-in that drains ---------------------------------------------------------------


def test_terminations_wait_for_the_worker_to_drain() -> None:
    stop_timeout = int(unit("cloudworker-worker.service")["Service"]["TimeoutStopSec"])
    assert stop_timeout > DEFAULT_SHUTDOWN_GRACE  # the grace period fits in the stop
    hook = RESOURCES["DrainHook"]
    assert hook["Type"] == "AWS::AutoScaling::LifecycleHook"
    props = hook["Properties"]
    assert props["AutoScalingGroupName"] == {"Ref": "WorkerGroup"}
    assert props["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
    assert props["LifecycleHookName"] == drain.HOOK_NAME
    # The stop, plus the agent's polls and margin; then the instance goes regardless.
    assert props["HeartbeatTimeout"] >= stop_timeout + 60 + drain.POLL_SECONDS
    assert props["DefaultResult"] == "CONTINUE"


def test_the_drain_agent_may_complete_this_stacks_lifecycle_actions_only() -> None:
    statements = role_statements()
    complete = statements["CompleteLifecycleAction"]
    assert (complete["Effect"], complete["Action"]) == (
        "Allow",
        "autoscaling:CompleteLifecycleAction",
    )
    assert complete["Condition"] == {
        "StringEquals": {
            "autoscaling:ResourceTag/aws:cloudformation:stack-name": {"Ref": "AWS::StackName"}
        }
    }
    assert resource_string(complete["Resource"]).startswith(
        "arn:${AWS::Partition}:autoscaling:${AWS::Region}:${AWS::AccountId}:"
    )
    describe = statements["DescribeAutoScalingInstances"]
    assert (describe["Action"], describe["Resource"]) == (
        "autoscaling:DescribeAutoScalingInstances",
        "*",
    )
    granted = {a for s in statements.values() for a in as_list(s["Action"])}
    assert {a for a in granted if a.startswith("autoscaling:")} == {
        "autoscaling:CompleteLifecycleAction",
        "autoscaling:DescribeAutoScalingInstances",
    }


def test_the_drain_unit_runs_the_agent_as_root_and_is_in_the_user_data() -> None:
    assert render.DEPLOY_DIR / "systemd" / "cloudworker-drain.service" in render.UNITS
    service = unit("cloudworker-drain.service")["Service"]
    assert shlex.split(service["ExecStart"])[1:3] == ["-m", "deploy.aws.drain"]
    assert "User" not in service  # root: it stops the worker unit
    assert service["Restart"] == "on-failure"  # done (exit 0): the instance is going
    rest = render.user_data_pieces()[2]
    assert "/etc/cloudworker/units/cloudworker-drain.service" in rest
    # It stops the worker unit the user data installs.
    assert drain.STOP_COMMAND == ("systemctl", "stop", "cloudworker-worker.service")
    assert render.DEPLOY_DIR / "systemd" / drain.STOP_COMMAND[-1] in render.UNITS


def test_the_drain_agent_starts_on_workers_and_the_exporter_beside_flower(
    tmp_path: Path,
) -> None:
    assert run_start_step(tmp_path, "worker") == [
        "daemon-reload",
        "enable --now cloudworker-worker.service cloudworker-drain.service",
    ]
    assert run_start_step(tmp_path, "flower") == [
        "daemon-reload",
        "enable --now cloudworker-flower.service cloudworker-exporter.service",
    ]


def test_flower_and_the_exporter_are_reachable_from_the_admin_cidr_only() -> None:
    exporter = shlex.split(unit("cloudworker-exporter.service")["Service"]["ExecStart"])
    exporter_port = int(exporter[exporter.index("--port") + 1])
    flower_sg = RESOURCES["FlowerSecurityGroup"]["Properties"]
    assert flower_sg["SecurityGroupIngress"] == [
        {
            "Description": "Flower, behind its basic authentication",
            "IpProtocol": "tcp",
            "FromPort": FLOWER_PORT,
            "ToPort": FLOWER_PORT,
            "CidrIp": {"Ref": "AdminCidr"},
        },
        {
            "Description": "Prometheus metrics exporter "
            "(no secrets, only task names, hostnames and counts)",
            "IpProtocol": "tcp",
            "FromPort": exporter_port,
            "ToPort": exporter_port,
            "CidrIp": {"Ref": "AdminCidr"},
        },
    ]
    assert T["Outputs"]["MetricsUrl"]["Value"] == {
        "Fn::Sub": f"http://${{FlowerAddress}}:{exporter_port}/metrics"
    }
    assert "SecurityGroupIngress" not in RESOURCES["WorkerSecurityGroup"]["Properties"]
    assert "Default" not in T["Parameters"]["AdminCidr"]  # no open default
    flower = RESOURCES["FlowerInstance"]["Properties"]
    assert flower["SecurityGroupIds"] == [{"Fn::GetAtt": ["FlowerSecurityGroup", "GroupId"]}]
    assert {"Key": ROLE_TAG, "Value": "flower"} in flower["Tags"]
    group_tags = RESOURCES["WorkerGroup"]["Properties"]["Tags"]
    assert {"Key": ROLE_TAG, "Value": "worker", "PropagateAtLaunch": True} in group_tags
    assert T["Outputs"]["FlowerUrl"]["Value"] == {
        "Fn::Sub": f"http://${{FlowerAddress}}:{FLOWER_PORT}"
    }
    metadata = RESOURCES["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["MetadataOptions"]
    assert (metadata["HttpTokens"], metadata["InstanceMetadataTags"]) == ("required", "enabled")


def test_no_password_in_the_template_or_the_user_data() -> None:
    assert "FLOWER_PASSWORD=" not in TEMPLATE_TEXT
    assert not re.search(r"(?i)password\s*[:=]\s*\S", TEMPLATE_TEXT.replace("_PARAMETER=", ""))
    assert "NoEcho" not in TEMPLATE_TEXT  # no secret travels as a parameter either


def test_the_env_file_is_made_of_outputs_the_template_has() -> None:
    assert set(envfile.FROM_OUTPUTS.values()) <= set(T["Outputs"])
    assert set(envfile.FROM_OPTIONAL_OUTPUTS.values()) <= set(T["Outputs"])
    # Those exist only when their parameter is set: a default stack's file goes without.
    assert all("Condition" in T["Outputs"][key] for key in envfile.FROM_OPTIONAL_OUTPUTS.values())


def test_a_client_of_a_stack_with_a_base_prefix_and_a_key_uses_both() -> None:
    outputs = {key: f"<{key}>" for key in envfile.FROM_OUTPUTS.values()}
    assert "CLOUDWORKER_S3_PREFIX" not in envfile.environment(outputs)
    outputs.update(KeyPrefix="team-a/", KmsKeyArn="arn:aws:kms:eu-west-1:1:key/k")
    env = envfile.environment(outputs)
    assert (env["CLOUDWORKER_S3_PREFIX"], env["CLOUDWORKER_KMS_KEY"]) == (
        "team-a/",
        "arn:aws:kms:eu-west-1:1:key/k",
    )


# -- user data and units ------------------------------------------------------------------


KEY_ARN = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def sample_values(**more: str) -> dict[str, str]:
    return {
        "AWS::Region": "eu-west-1",
        "AWS::StackName": "cw",
        "NamePrefix": "cw-",
        "Bucket": "cw-123456789012-eu-west-1",
        "ResultExpiryDays": "7",
        "FlowerUser": "admin",
        "ProjectVersion": "0123456789ab",
        "KmsKeyArn": "",
        "KeyPrefix": "",
        "WorkerQueues": "tasks",
        **more,
    }


def test_committed_template_equals_a_fresh_render() -> None:
    assert render.render_template(TEMPLATE_TEXT) == TEMPLATE_TEXT
    stale = TEMPLATE_TEXT.replace("set -euo pipefail", "set -eu", 1)
    assert render.render_template(stale) == TEMPLATE_TEXT


def test_template_user_data_is_the_script_and_the_units_verbatim() -> None:
    data = RESOURCES["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]
    delimiter, (header, settings, rest) = data["Fn::Base64"]["Fn::Join"]
    assert delimiter == ""
    assert (header, settings["Fn::Sub"], rest) == render.user_data_pieces()
    for path in (*render.UNITS, render.USERDATA):
        assert path.read_text().rstrip("\n") in rest
    names = set(re.findall(r"\$\{([A-Za-z0-9:.]+)\}", settings["Fn::Sub"]))
    assert names <= set(T["Parameters"]) | set(RESOURCES) | {"AWS::Region", "AWS::StackName"}


def test_stack_env_carries_the_settings_a_worker_reads() -> None:
    lines = render.stack_env(sample_values()).splitlines()
    env = dict(line.split("=", 1) for line in lines)
    settings = Settings.from_env(env)
    assert (settings.region, settings.queue_prefix, settings.bucket) == (
        "eu-west-1",
        "cw-",
        "cw-123456789012-eu-west-1",
    )
    assert settings.task_queue_name == "cw-tasks"
    assert env["CLOUDWORKER_SOURCE"] == "s3://cw-123456789012-eu-west-1/" + (
        "releases/cloudworker-0123456789ab.tar.gz"
    )
    assert env["CLOUDWORKER_FLOWER_PASSWORD_PARAMETER"] == "/cw/flower-password"
    # The parameters' defaults are the settings' defaults: no key, no prefix.
    assert (settings.kms_key, settings.s3_prefix) == (DEFAULTS.kms_key, DEFAULTS.s3_prefix)
    assert (T["Parameters"]["KmsKeyArn"]["Default"], T["Parameters"]["KeyPrefix"]["Default"]) == (
        DEFAULTS.kms_key,
        DEFAULTS.s3_prefix,
    )
    lines = render.stack_env(sample_values(KmsKeyArn=KEY_ARN, KeyPrefix="team-a/")).splitlines()
    settings = Settings.from_env(dict(line.split("=", 1) for line in lines))
    assert (settings.kms_key, settings.s3_prefix) == (KEY_ARN, "team-a/")


def test_worker_unit_runs_the_local_worker_command_on_the_stacks_queues() -> None:
    service = unit("cloudworker-worker.service")["Service"]
    command = shlex.split(service["ExecStart"].replace("%%", "%"))
    assert command[:4] == ["/opt/cloudworker/venv/bin/python", "-m", "celery", "-A"]
    local_options = {a.split("=")[0] for a in local.worker_command("w", 2)[3:] if a.startswith("-")}
    unit_options = {a.split("=")[0] for a in command if a.startswith("-")}
    assert local_options <= unit_options
    assert command[command.index("-Q") + 1] == "${CLOUDWORKER_WORKER_QUEUES}"
    env = dict(line.split("=", 1) for line in render.stack_env(sample_values()).splitlines())
    assert env["CLOUDWORKER_WORKER_QUEUES"] == "tasks"  # the template's WorkerQueues default
    assert env["CLOUDWORKER_CREATE_QUEUES"] == "false"  # the role may create no task queue
    # systemd turns %% into %; Celery must then expand what is left to the host name.
    (hostname,) = [a.split("=", 1)[1] for a in command if a.startswith("--hostname=")]
    assert host_format(hostname) == f"worker@{socket.gethostname()}"
    assert service["User"] == "cloudworker" and service["Restart"] == "on-failure"
    assert service["KillMode"] == "mixed"  # SIGTERM to the main process: warm shutdown
    assert int(service["TimeoutStopSec"]) >= DEFAULTS.visibility_timeout


def test_flower_unit_reads_its_password_from_ssm_before_each_start() -> None:
    text = (render.DEPLOY_DIR / "systemd" / "cloudworker-flower.service").read_text()
    service = unit("cloudworker-flower.service")["Service"]
    pre = shlex.split(service["ExecStartPre"])
    assert pre[1:3] == ["-m", "deploy.aws.secret"]
    runtime = "/run/" + service["RuntimeDirectory"] + "/"
    assert pre[3].startswith(runtime) and service["RuntimeDirectoryMode"] == "0700"
    assert f"EnvironmentFile=-{pre[3]}\n" in text
    start = shlex.split(service["ExecStart"])
    assert start[1:3] == ["-m", "deploy.flower"]
    assert start[start.index("--port") + 1] == str(FLOWER_PORT)
    assert "--address" in start and "PASSWORD" not in service["ExecStart"]


def test_user_data_script_passes_bash_syntax_check(tmp_path: Path) -> None:
    script = tmp_path / "user-data"
    script.write_text(render.user_data(sample_values()))
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stderr) == (0, "")


# -- stuck work and dead letters (issue #27) ------------------------------------------------


def test_tasks_received_far_more_often_than_deleted_raise_an_alarm() -> None:
    props = alarm("ReceivedNotDeletedAlarm")
    task_queue = [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["TaskQueue", "QueueName"]}}]
    metrics = math_metrics(props)
    assert metrics["received"] == ("AWS/SQS", "NumberOfMessagesReceived", task_queue, "Sum", 300)
    assert metrics["deleted"] == ("AWS/SQS", "NumberOfMessagesDeleted", task_queue, "Sum", 300)
    (returned,) = [m for m in props["Metrics"] if m["ReturnData"]]
    template = returned["Expression"]["Fn::Sub"]
    assert set(re.findall(r"\$\{([^}]+)\}", template)) == {"ReceivedPerDeletedAlarmRatio"}
    assert (props["Threshold"], props["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
    assert (props["EvaluationPeriods"], props["DatapointsToAlarm"]) == (3, 3)
    ratio = T["Parameters"]["ReceivedPerDeletedAlarmRatio"]
    assert (ratio["Type"], ratio["Default"], ratio["MinValue"]) == ("Number", 3, 1)
    expression = template.replace("${ReceivedPerDeletedAlarmRatio}", str(ratio["Default"]))

    def fires(received: float | None, deleted: float | None) -> bool:
        value = metric_math(expression, received=received, deleted=deleted)
        return bool(value >= props["Threshold"])

    assert fires(40, 10) and fires(10, 0) and fires(10, None)  # nothing deleted: no division
    assert not fires(30, 10) and not fires(100, 100) and not fires(9, 0)  # one retry is no loop
    assert not fires(None, None) and not fires(0, 5)


def test_new_dead_letters_raise_an_alarm_whoever_moved_them() -> None:
    props = alarm("DeadLetterQueueGrowingAlarm")
    dlq = [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}}]
    metrics = math_metrics(props)
    # The depth, not NumberOfMessagesSent, which leaves out what the redrive policy moves.
    assert metrics["visible"] == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        dlq,
        "Maximum",
        60,
    )
    assert metrics["inflight"] == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesNotVisible",
        dlq,
        "Maximum",
        60,
    )
    assert metrics["added"] == "DIFF(FILL(visible, REPEAT) + FILL(inflight, REPEAT))"
    assert [m["Id"] for m in props["Metrics"] if m["ReturnData"]] == ["added"]
    assert (props["Threshold"], props["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    assert (props["EvaluationPeriods"], props["DatapointsToAlarm"]) == (15, 1)
    # The alarm on any message in it stays as it was.
    assert alarm("DeadLetterQueueNotEmptyAlarm")["AlarmActions"] == [{"Ref": "AlarmTopic"}]


# -- private subnets: VPC endpoints (issue #27) ---------------------------------------------

ENDPOINT_SERVICES = {"SqsEndpoint": "sqs", "SnsEndpoint": "sns", "SsmEndpoint": "ssm"}
ENDPOINT_RESOURCES = {*ENDPOINT_SERVICES, "S3Endpoint", "EndpointSecurityGroup"}


def test_vpc_endpoints_exist_only_when_asked_for() -> None:
    parameter = T["Parameters"]["CreateVpcEndpoints"]
    assert (parameter["Default"], sorted(parameter["AllowedValues"])) == (
        "false",
        ["false", "true"],
    )
    route_tables = T["Parameters"]["RouteTableIds"]
    assert (route_tables["Type"], route_tables["Default"]) == ("CommaDelimitedList", "")
    endpoints = {n for n, r in RESOURCES.items() if r["Type"] == "AWS::EC2::VPCEndpoint"}
    assert endpoints | {"EndpointSecurityGroup"} == ENDPOINT_RESOURCES
    assert not created() & ENDPOINT_RESOURCES
    assert not created(RouteTableIds="rtb-1") & ENDPOINT_RESOURCES
    assert created(CreateVpcEndpoints="true") & ENDPOINT_RESOURCES == ENDPOINT_RESOURCES - {
        "S3Endpoint"  # no route table: the VPC reaches S3 already
    }
    both = created(CreateVpcEndpoints="true", RouteTableIds="rtb-1,rtb-2")
    assert both & ENDPOINT_RESOURCES == ENDPOINT_RESOURCES


def test_interface_endpoints_serve_the_subnets_to_the_instances_only() -> None:
    group = {"Fn::GetAtt": ["EndpointSecurityGroup", "GroupId"]}
    for name, service in ENDPOINT_SERVICES.items():
        props = RESOURCES[name]["Properties"]
        assert props["ServiceName"] == {"Fn::Sub": f"com.amazonaws.${{AWS::Region}}.{service}"}
        assert (props["VpcEndpointType"], props["PrivateDnsEnabled"]) == ("Interface", True)
        assert (props["VpcId"], props["SubnetIds"]) == ({"Ref": "VpcId"}, {"Ref": "SubnetIds"})
        assert props["SecurityGroupIds"] == [group]
    ingress = RESOURCES["EndpointSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert ingress == [
        {
            "IpProtocol": "tcp",
            "FromPort": 443,
            "ToPort": 443,
            "SourceSecurityGroupId": {"Fn::GetAtt": [source, "GroupId"]},
        }
        for source in ("WorkerSecurityGroup", "FlowerSecurityGroup")
    ]
    s3 = RESOURCES["S3Endpoint"]["Properties"]
    assert s3["ServiceName"] == {"Fn::Sub": "com.amazonaws.${AWS::Region}.s3"}
    assert (s3["VpcEndpointType"], s3["RouteTableIds"]) == ("Gateway", {"Ref": "RouteTableIds"})
    assert "SubnetIds" not in s3 and "PrivateDnsEnabled" not in s3


def test_each_endpoint_allows_this_stacks_resources_only() -> None:
    role = role_statements()
    password = resource_string(role["FlowerPassword"]["Resource"])
    allowed = {
        "SqsEndpoint": {("sqs:*", SQS + "${NamePrefix}*"), ("sqs:ListQueues", SQS + "*")},
        "SnsEndpoint": {("sns:*", resource_string(role["Topics"]["Resource"]))},
        "SsmEndpoint": {("ssm:GetParameter", password)},
        "S3Endpoint": {("s3:*", "${Bucket.Arn}"), ("s3:*", "${Bucket.Arn}/*")},
    }
    for name, expected in allowed.items():
        statements = RESOURCES[name]["Properties"]["PolicyDocument"]["Statement"]
        grants = set()
        for statement in statements:
            assert statement["Effect"] == "Allow" and "Condition" not in statement, name
            assert not {"NotAction", "NotResource"} & set(statement), name
            for resource in as_list(statement["Resource"]):
                assert resource != "*" and resource_string(resource) != "*", name
                grants |= {(a, resource_string(resource)) for a in as_list(statement["Action"])}
        assert grants == expected, name
    # The queues and topics the role may use are under the endpoints' prefixes.
    assert role["ListQueues"]["Resource"] == {"Fn::Sub": SQS + "*"}
    for sid in ("ProcessQueues", "Topics"):
        for resource in as_list(role[sid]["Resource"]):
            assert resource_string(resource).startswith(SQS + "${NamePrefix}") or (
                resource_string(resource).startswith(SNS + "${NamePrefix}")
            )


# -- a customer managed KMS key and a base prefix (issue #27) ------------------------------


def test_a_kms_key_encrypts_the_bucket_and_the_queues_only_when_given() -> None:
    parameter = T["Parameters"]["KmsKeyArn"]
    assert (parameter["Type"], parameter["Default"]) == ("String", "")
    pattern = re.compile(parameter["AllowedPattern"])
    assert pattern.fullmatch("") and pattern.fullmatch(KEY_ARN)
    assert pattern.fullmatch("arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/mrk-1a2b")
    for wrong in (
        "*",
        "alias/mine",
        "arn:aws:kms:eu-west-1:123456789012:alias/mine",
        KEY_ARN + "*",
    ):
        assert not pattern.fullmatch(wrong), wrong
    assert T["Conditions"]["HasKmsKey"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "KmsKeyArn"}, ""]}]}
    assert conditions()["HasKmsKey"] is False
    assert conditions(KmsKeyArn=KEY_ARN)["HasKmsKey"] is True
    key = {"Ref": "KmsKeyArn"}
    (rule,) = RESOURCES["Bucket"]["Properties"]["BucketEncryption"][
        "ServerSideEncryptionConfiguration"
    ]
    assert rule["Fn::If"][:2] == [
        "HasKmsKey",
        {
            "ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key},
            "BucketKeyEnabled": True,
        },
    ]
    for queue in ("TaskQueue", "DeadLetterQueue", "InboxQueue"):
        props = RESOURCES[queue]["Properties"]
        assert props["KmsMasterKeyId"] == {"Fn::If": ["HasKmsKey", key, NO_VALUE]}, queue
        assert props["SqsManagedSseEnabled"] == {"Fn::If": ["HasKmsKey", NO_VALUE, True]}, queue
        # By default exactly today's: SQS-managed encryption, no key.
        default = resolved(props, conditions())
        assert default["SqsManagedSseEnabled"] is True and "KmsMasterKeyId" not in default
        with_key = resolved(props, conditions(KmsKeyArn=KEY_ARN))
        assert with_key["KmsMasterKeyId"] == key and "SqsManagedSseEnabled" not in with_key


def test_the_role_may_use_the_kms_key_only_when_given_and_no_other() -> None:
    (policy,) = RESOURCES["InstanceRole"]["Properties"]["Policies"]
    conditional = [s for s in policy["PolicyDocument"]["Statement"] if "Fn::If" in s]
    assert conditional == [
        {
            "Fn::If": [
                "HasKmsKey",
                {
                    "Sid": "KmsKey",
                    "Effect": "Allow",
                    "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                    "Resource": {"Ref": "KmsKeyArn"},
                },
                NO_VALUE,
            ]
        }
    ]
    for given, expected in (({}, set()), ({"KmsKeyArn": KEY_ARN}, {"KmsKey"})):
        document = resolved(policy["PolicyDocument"], conditions(**given))
        kms = {s["Sid"] for s in document["Statement"] if "kms:" in str(s["Action"])}
        assert kms == expected
    granted = {a for s in role_statements().values() for a in as_list(s["Action"])}
    assert {a for a in granted if a.startswith("kms:")} == {"kms:GenerateDataKey", "kms:Decrypt"}


def test_a_key_prefix_scopes_every_object_the_workers_write_but_not_the_releases() -> None:
    parameter = T["Parameters"]["KeyPrefix"]
    assert (parameter["Type"], parameter["Default"]) == ("String", "")
    pattern = re.compile(parameter["AllowedPattern"])
    for good in ("", "team-a/", "a/b.c/", "x_1/"):
        assert pattern.fullmatch(good), good
        settings = Settings.from_env({"CLOUDWORKER_S3_PREFIX": good})
        assert settings.s3_prefix == good  # the workers accept what the stack does
    for bad in ("/", "/a/", "a", "a//", "a*/", "a/*", "a b/", "${x}/"):
        assert not pattern.fullmatch(bad), bad
    rules = RESOURCES["Bucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert {r["Prefix"]["Fn::Sub"] for r in rules} == {
        "${KeyPrefix}" + prefix for prefix in DATA_PREFIXES
    }
    (notification,) = RESOURCES["Bucket"]["Properties"]["NotificationConfiguration"][
        "QueueConfigurations"
    ]
    (rule,) = notification["Filter"]["S3Key"]["Rules"]
    assert rule["Value"] == {"Fn::Sub": "${KeyPrefix}" + DEFAULTS.inbox_prefix}
    objects = [
        resource_string(r)
        for s in role_statements().values()
        for r in as_list(s["Resource"])
        if resource_string(r).startswith("${Bucket.Arn}/")
    ]
    assert len(objects) == len(DATA_PREFIXES) + 3  # and inbox/, outbox/, releases/
    for resource in objects:
        assert resource.startswith("${Bucket.Arn}/${KeyPrefix}") != resource.endswith(
            "/releases/*"
        ), resource
    assert render.STACK_ENV["CLOUDWORKER_SOURCE"] == (
        "s3://${Bucket}/releases/cloudworker-${ProjectVersion}.tar.gz"
    )


def test_the_instances_and_the_clients_get_the_key_and_the_prefix() -> None:
    assert render.STACK_ENV["CLOUDWORKER_KMS_KEY"] == "${KmsKeyArn}"
    assert render.STACK_ENV["CLOUDWORKER_S3_PREFIX"] == "${KeyPrefix}"
    # Outputs only when set, so that a default stack's outputs are today's.
    assert T["Outputs"]["KmsKeyArn"] == {
        "Condition": "HasKmsKey",
        "Description": "CLOUDWORKER_KMS_KEY",
        "Value": {"Ref": "KmsKeyArn"},
    }
    assert T["Outputs"]["KeyPrefix"] == {
        "Condition": "HasKeyPrefix",
        "Description": "CLOUDWORKER_S3_PREFIX",
        "Value": {"Ref": "KeyPrefix"},
    }
    assert conditions() | {"HasKeyPrefix": False, "HasKmsKey": False} == conditions()
    assert conditions(KeyPrefix="team-a/")["HasKeyPrefix"] is True
    (_, settings, _) = RESOURCES["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"][
        "Fn::Base64"
    ]["Fn::Join"][1]
    assert "CLOUDWORKER_KMS_KEY=${KmsKeyArn}\n" in settings["Fn::Sub"]
    assert "CLOUDWORKER_S3_PREFIX=${KeyPrefix}\n" in settings["Fn::Sub"]


def test_every_parameter_is_in_one_console_group() -> None:
    groups = T["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    listed = [name for group in groups for name in group["Parameters"]]
    assert sorted(listed) == sorted(T["Parameters"])


def test_the_defaults_make_todays_stack() -> None:
    """Every new parameter's default adds no resource and changes no property."""
    new = {"EndpointSecurityGroup", "SqsEndpoint", "SnsEndpoint", "SsmEndpoint", "S3Endpoint"}
    assert created() == set(RESOURCES) - new - {"AlarmSubscription"}
    truth = conditions()
    bucket = resolved(RESOURCES["Bucket"]["Properties"], truth)
    assert bucket["BucketEncryption"] == {
        "ServerSideEncryptionConfiguration": [
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
        ]
    }
    role = resolved(RESOURCES["InstanceRole"]["Properties"], truth)
    sids = [s.get("Sid") for s in role["Policies"][0]["PolicyDocument"]["Statement"]]
    assert "KmsKey" not in sids and len(sids) == len(set(sids))


# -- pure helpers of the deploy command -------------------------------------------------


def test_parameters_given_else_previous_else_default() -> None:
    declared = {"A": "1", "B": None, "C": "3", "D": "4"}
    result = stack.parameters(declared, {"A": "9", "C": None}, previous=["B", "C"])
    assert result == [
        {"ParameterKey": "A", "ParameterValue": "9"},
        {"ParameterKey": "B", "UsePreviousValue": True},
        {"ParameterKey": "C", "UsePreviousValue": True},
        {"ParameterKey": "D", "ParameterValue": "4"},
    ]
    with pytest.raises(stack.StackError, match="B needs a value"):
        stack.parameters(declared, {})
    with pytest.raises(stack.StackError, match="no parameter Z"):
        stack.parameters(declared, {"Z": "1"})


def test_env_file_has_no_credentials_and_says_where_the_password_is(tmp_path: Path) -> None:
    outputs = {key: f"<{key}>" for key in envfile.FROM_OUTPUTS.values()}
    passthrough = {
        "AWS_PROFILE": "dev",
        "AWS_ACCESS_KEY_ID": "AKIA-not-to-be-copied",
        "AWS_SECRET_ACCESS_KEY": "not-to-be-copied",
        "AWS_SESSION_TOKEN": "not-to-be-copied",
    }
    env = envfile.environment(outputs, passthrough=passthrough)
    path = tmp_path / "run" / "env"
    envfile.write(path, env, stack_name="cw")
    text = path.read_text()
    assert "not-to-be-copied" not in text and "AWS_ACCESS_KEY_ID" not in text
    read = local.Stack(path.parent).read_env()
    assert read["CLOUDWORKER_FLOWER_URL"] == "<FlowerUrl>"
    assert read["CLOUDWORKER_FLOWER_USER"] == "<FlowerUser>"
    assert read["AWS_PROFILE"] == "dev" and "AWS_ENDPOINT_URL" not in read
    assert "aws ssm get-parameter --name <FlowerPasswordParameter> --with-decryption" in text


def test_password_file_is_private_and_refuses_unsafe_values(tmp_path: Path) -> None:
    path = tmp_path / "secret.env"
    secret.write_env_file(path, "abc-DEF_123456")
    assert path.read_text() == "CLOUDWORKER_FLOWER_PASSWORD=abc-DEF_123456\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(secret.UnsafePassword) as caught:
        secret.write_env_file(tmp_path / "bad.env", "has space and $dollar")
    assert "dollar" not in str(caught.value)  # the value never reaches a message
    assert not (tmp_path / "bad.env").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["secret.env"]


def test_deploy_cli_keeps_its_other_commands() -> None:
    env = {**os.environ, "PYTHONPATH": str(render.DEPLOY_DIR.parent)}
    for args in (["local", "--help"], ["provision", "--help"], ["aws", "render", "--check"]):
        done = subprocess.run(
            [sys.executable, "-m", "deploy", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=render.DEPLOY_DIR.parent,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    assert "template is current" in done.stdout
