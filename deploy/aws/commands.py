"""``python -m deploy aws up | status | env | down``: what each command does.

Every command works on one stack (``--stack-name``, default ``cloudworker``) in
one region, with the caller's own AWS credentials (boto3's standard chain).
Results go to standard output; progress and warnings to standard error.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml
from botocore.exceptions import ClientError

from cloudworker.settings import Settings, dead_letter_name
from deploy.aws import cleanup, envfile, release, secret, stack, task_queues
from deploy.aws.names import TEMPLATE, password_parameter

__all__ = ["Deployment", "DownOptions", "UpOptions", "down", "env", "status", "up"]

DEFAULT_STACK = "cloudworker"


@dataclass
class Deployment:
    """The stack a command works on, and where it reports."""

    stack_name: str = DEFAULT_STACK
    region: str = "us-east-1"
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    poll: float = 5.0

    def client(self, service: str) -> Any:
        from cloudworker import aws  # boto3 clients with timeouts and standard retries

        return aws.client(service, Settings(region=self.region))

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        print(text, file=self.err, flush=True)


@dataclass(frozen=True)
class UpOptions:
    """What ``up`` may set; ``None`` keeps the stack's value (or the template's default)."""

    revision: str = "HEAD"
    prefix: str | None = None
    instance_type: str | None = None
    min_workers: int | None = None
    max_workers: int | None = None
    target_backlog: int | None = None
    admin_cidr: str | None = None
    flower_user: str | None = None
    flower_instance_type: str | None = None
    result_expiry_days: int | None = None
    vpc: str | None = None
    subnets: tuple[str, ...] | None = None
    image_parameter: str | None = None
    #: ``--queue`` values: the stack's queues beside ``tasks`` (None keeps the stack's).
    queues: tuple[str, ...] | None = None
    template: Path = TEMPLATE
    env_file: Path = envfile.DEFAULT_PATH


@dataclass(frozen=True)
class DownOptions:
    """``down --empty-bucket`` deletes the user's data in the bucket too."""

    empty_bucket: bool = False


class CommandError(Exception):
    """A command cannot go on; the message says why and what to do."""


def up(d: Deployment, options: UpOptions) -> int:
    """Create or update the stack, wait with progress, print its outputs, write the env file."""
    cfn, s3, ssm = d.client("cloudformation"), d.client("s3"), d.client("ssm")
    template = yaml.safe_load(options.template.read_text())
    # As compact JSON: the committed file is larger than CloudFormation takes inline.
    summary = cfn.get_template_summary(TemplateBody=stack.compact_data(template))
    declared = {p["ParameterKey"]: p.get("DefaultValue") for p in summary["Parameters"]}
    built = release.build(options.revision)
    if release.is_dirty():
        d.note(f"warning: uncommitted changes are not deployed; deploying commit {built.version}")
    existing = _resting_stack(d, cfn)
    queues = _queues(d, options, existing)
    given = _parameters(d, options, built.version, existing)
    if secret.ensure(ssm, password_parameter(d.stack_name), stack_name=d.stack_name):
        d.note(f"created Flower's password in SSM: {password_parameter(d.stack_name)}")
    bucket = stack.outputs(existing).get("Bucket") if existing else None
    if bucket:
        d.note(f"uploading release {built.version} to s3://{bucket}/{built.key}")
        release.upload(s3, bucket, built)

    def upload_when_bucket_exists() -> None:
        nonlocal bucket
        if bucket is None:
            bucket = stack.resource_id(cfn, d.stack_name, "Bucket")
            if bucket is not None:
                d.note(f"uploading release {built.version} to s3://{bucket}/{built.key}")
                release.upload(s3, bucket, built)

    def staged(body: str) -> str:
        if bucket is None:
            raise CommandError(f"stack {d.stack_name} has no bucket to hold its template")
        digest = hashlib.sha256(body.encode()).hexdigest()[:16]
        key = f"{cleanup.RELEASES_PREFIX}templates/{digest}.json"
        d.note(f"the template is over CloudFormation's inline limit: sent as s3://{bucket}/{key}")
        s3.put_object(Bucket=bucket, Key=key, Body=body.encode(), ContentType="application/json")
        return f"https://{bucket}.s3.{d.region}.amazonaws.com/{key}"

    body = stack.compact_data(task_queues.expand(template, queues))
    if existing is None and len(body.encode()) > stack.MAX_TEMPLATE_BODY:
        # Only a stack's bucket can hold a template that large: create the stack
        # with its one queue first, then add the others.
        d.note(
            f"creating stack {d.stack_name} with queue tasks first, then adding {', '.join(queues)}"
        )
        first = {**given, task_queues.PARAMETER: task_queues.parameter_value(())}
        _apply(
            d,
            cfn,
            stack.compact_data(template),
            declared,
            first,
            None,
            upload_when_bucket_exists,
            staged,
        )
        existing = _resting_stack(d, cfn)
    given[task_queues.PARAMETER] = task_queues.parameter_value(queues)
    _apply(d, cfn, body, declared, given, existing, upload_when_bucket_exists, staged)
    return _report(d, options.env_file)


def _apply(  # noqa: PLR0917 - the steps of up() that run twice
    d: Deployment,
    cfn: Any,
    body: str,
    declared: Mapping[str, str | None],
    given: Mapping[str, str | None],
    existing: Mapping[str, Any] | None,
    on_poll: Callable[[], None],
    staged: Callable[[str], str],
) -> None:
    """Create or update the stack with ``body`` and wait for it to rest."""
    after = stack.latest_event(cfn, existing["StackId"]) if existing else None
    action = "updating" if existing else "creating"
    d.note(f"{action} stack {d.stack_name} in {d.region} (version {given['ProjectVersion']})")
    previous = [p["ParameterKey"] for p in (existing or {}).get("Parameters", [])]
    params = stack.parameters(declared, given, previous=previous)
    tags = {"cloudworker:stack": d.stack_name}
    exists = existing is not None
    if stack.create_or_update(
        cfn, d.stack_name, body, params, exists=exists, tags=tags, staged=staged
    ):
        final = stack.wait(cfn, d.stack_name, after=after, out=d.err, poll=d.poll, on_poll=on_poll)
        if final not in stack.SUCCEEDED:
            raise CommandError(f"stack {d.stack_name} is {final}: see the events above")
    else:
        d.note(f"stack {d.stack_name} is up to date")


def _queues(
    d: Deployment, options: UpOptions, existing: Mapping[str, Any] | None
) -> tuple[str, ...]:
    """The stack's queues beside ``tasks``: ``--queue``'s, else those the stack has."""
    had: tuple[str, ...] = ()
    try:
        for parameter in (existing or {}).get("Parameters", []):
            if parameter["ParameterKey"] == task_queues.PARAMETER:
                had = task_queues.from_parameter(parameter.get("ParameterValue", ""))
        queues = had if options.queues is None else task_queues.parse(options.queues)
    except task_queues.QueueListError as exc:
        raise CommandError(str(exc)) from None
    dropped = [name for name in had if name not in queues]
    if dropped:
        d.note(
            f"warning: removing queue(s) {', '.join(dropped)}: CloudFormation deletes them "
            "with their dead-letter queues and every message in them"
        )
    return queues


def status(d: Deployment) -> int:
    """Print the stack's status, workers, queue depths and outputs."""
    cfn = d.client("cloudformation")
    found = stack.find(cfn, d.stack_name)
    if found is None:
        d.say(f"no stack {d.stack_name} in {d.region}")
        return 1
    outs = stack.outputs(found)
    changed = found.get("LastUpdatedTime") or found.get("CreationTime")
    reason = found.get("StackStatusReason")
    d.say(
        f"stack {d.stack_name}: {found['StackStatus']}"
        + (f" ({reason})" if reason else "")
        + (f", last change {changed:%Y-%m-%d %H:%M:%S %Z}" if changed else "")
    )
    d.say(f"version {outs.get('ProjectVersion', '?')}")
    d.say(_workers_line(d, outs.get("WorkerGroup")))
    d.say(_queues_line(d, outs))
    others = task_queues.from_parameter(_parameter_value(found, task_queues.PARAMETER) or "")
    for name in others:
        d.say(_other_queue_line(d, outs.get("QueuePrefix", ""), name))
    if "FlowerUrl" in outs:
        d.say(
            f"flower {outs['FlowerUrl']} (user {outs.get('FlowerUser', '?')}, password in SSM "
            f"{outs.get('FlowerPasswordParameter', '?')})"
        )
    _print_outputs(d, outs)
    return 0


def env(d: Deployment, path: Path) -> int:
    """Write the client's environment file for the stack."""
    found = stack.find(d.client("cloudformation"), d.stack_name)
    if found is None:
        raise CommandError(f"no stack {d.stack_name} in {d.region}: run `python -m deploy aws up`")
    _write_env(d, stack.outputs(found), path)
    return 0


def down(d: Deployment, options: DownOptions) -> int:
    """Delete the stack and what was made for it; the bucket's data only if told to."""
    cfn, s3 = d.client("cloudformation"), d.client("s3")
    parameter = password_parameter(d.stack_name)
    found = stack.find(cfn, d.stack_name)
    if found is None:
        gone = cleanup.delete_parameter(d.client("ssm"), parameter)
        d.say(f"no stack {d.stack_name} in {d.region}" + (f"; deleted {parameter}" if gone else ""))
        return 0
    outs = stack.outputs(found)
    bucket = outs.get("Bucket") or stack.resource_id(cfn, d.stack_name, "Bucket")
    prefix = outs.get("QueuePrefix") or _parameter_value(found, "NamePrefix")
    if bucket:
        data = cleanup.user_objects(s3, bucket)
        if data and not options.empty_bucket:
            count = f"{len(data)}+" if len(data) >= 1000 else str(len(data))
            raise CommandError(
                f"bucket {bucket} holds {count} object(s) (e.g. {data[0]}): nothing was "
                "deleted; rerun with --empty-bucket to delete them with the stack"
            )
        _empty(d, s3, bucket, everything=options.empty_bucket)
    final = _delete_stack(d, cfn, found["StackId"])
    if final == "DELETE_FAILED" and bucket and options.empty_bucket:
        # Workers may have written results while the bucket was emptied.
        d.note("the bucket was written to meanwhile: emptying it again")
        _empty(d, s3, bucket, everything=True)
        final = _delete_stack(d, cfn, found["StackId"])
    if final != "DELETE_COMPLETE":
        raise CommandError(f"stack {d.stack_name} is {final}: see the events above")
    removed = []
    if prefix:
        removed += cleanup.delete_runtime_queues(d.client("sqs"), prefix)
        removed += cleanup.delete_runtime_topics(d.client("sns"), prefix)
    if cleanup.delete_parameter(d.client("ssm"), parameter):
        removed.append(parameter)
    d.say(f"stack {d.stack_name} deleted" + (f"; also {', '.join(removed)}" if removed else ""))
    return 0


# -- helpers -----------------------------------------------------------------------


def _resting_stack(d: Deployment, cfn: Any) -> dict[str, Any] | None:
    """The existing stack, ready to update; a failed first creation is deleted first."""
    found = stack.find(cfn, d.stack_name)
    if found is None:
        return None
    state = found["StackStatus"]
    if state == "ROLLBACK_COMPLETE":
        d.note(f"stack {d.stack_name} never got created ({state}): deleting it first")
        if _delete_stack(d, cfn, found["StackId"]) != "DELETE_COMPLETE":
            raise CommandError(f"cannot delete the failed stack {d.stack_name}")
        return None
    if state.endswith("_IN_PROGRESS"):
        raise CommandError(f"stack {d.stack_name} is busy ({state}): try again when it rests")
    if state.endswith("_FAILED"):
        raise CommandError(f"stack {d.stack_name} is {state}: fix it in the console first")
    return found


def _parameters(
    d: Deployment, options: UpOptions, version: str, existing: Mapping[str, Any] | None
) -> dict[str, str | None]:
    vpc, subnets = options.vpc, options.subnets
    if existing is None:
        if options.admin_cidr is None:
            raise CommandError("creating the stack needs --admin-cidr (who may reach Flower)")
        if vpc is None or not subnets:
            vpc, found = default_network(d.client("ec2"), vpc)
            subnets = subnets or found
    return {
        "NamePrefix": options.prefix or (None if existing else f"{d.stack_name}-"),
        "ProjectVersion": version,
        "InstanceType": options.instance_type,
        "MinWorkers": _text(options.min_workers),
        "MaxWorkers": _text(options.max_workers),
        "TargetBacklogPerWorker": _text(options.target_backlog),
        "AdminCidr": options.admin_cidr,
        "FlowerUser": options.flower_user,
        "FlowerInstanceType": options.flower_instance_type,
        "ResultExpiryDays": _text(options.result_expiry_days),
        "VpcId": vpc,
        "SubnetIds": ",".join(subnets) if subnets else None,
        "ImageId": options.image_parameter,
    }


def default_network(ec2: Any, vpc: str | None = None) -> tuple[str, tuple[str, ...]]:
    """The default VPC (or ``vpc``) and its default subnets, one per availability zone."""
    if vpc is None:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise CommandError("this region has no default VPC: pass --vpc and --subnets")
        vpc = str(vpcs[0]["VpcId"])
    filters = [{"Name": "vpc-id", "Values": [vpc]}, {"Name": "default-for-az", "Values": ["true"]}]
    subnets = ec2.describe_subnets(Filters=filters)["Subnets"]
    if not subnets:
        raise CommandError(f"VPC {vpc} has no default subnets: pass --subnets")
    ordered = sorted(subnets, key=lambda s: str(s["AvailabilityZone"]))
    return vpc, tuple(str(s["SubnetId"]) for s in ordered)


def _report(d: Deployment, env_file: Path) -> int:
    found = stack.find(d.client("cloudformation"), d.stack_name)
    if found is None:
        raise CommandError(f"stack {d.stack_name} disappeared")
    outs = stack.outputs(found)
    d.say(f"stack {d.stack_name}: {found['StackStatus']}")
    _print_outputs(d, outs)
    _write_env(d, outs, env_file)
    return 0


def _print_outputs(d: Deployment, outs: Mapping[str, str]) -> None:
    width = max((len(k) for k in outs), default=0)
    for key in sorted(outs):
        d.say(f"  {key:<{width}}  {outs[key]}")


def _write_env(d: Deployment, outs: Mapping[str, str], path: Path) -> None:
    variables = envfile.environment(outs, passthrough=os.environ)
    envfile.write(path, variables, stack_name=d.stack_name)
    d.say(f"client environment written to {path} (`. {path}`)")


def _empty(d: Deployment, s3: Any, bucket: str, *, everything: bool) -> None:
    count = cleanup.delete_objects(s3, bucket, prefix="" if everything else cleanup.RELEASES_PREFIX)
    if count:
        what = "object(s)" if everything else "release(s)"
        d.note(f"deleted {count} {what} from s3://{bucket}")


def _delete_stack(d: Deployment, cfn: Any, stack_id: str) -> str:
    after = stack.latest_event(cfn, stack_id)
    d.note(f"deleting stack {d.stack_name}")
    stack.delete(cfn, stack_id)
    return stack.wait(cfn, stack_id, after=after, out=d.err, poll=d.poll)


def _workers_line(d: Deployment, group: str | None) -> str:
    if not group:
        return "workers: unknown"
    try:
        groups = d.client("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=[group]
        )["AutoScalingGroups"]
    except ClientError as exc:
        return f"workers: unknown ({exc})"
    if not groups:
        return "workers: no group"
    g = groups[0]
    states: dict[str, int] = {}
    for instance in g.get("Instances", []):
        states[instance["LifecycleState"]] = states.get(instance["LifecycleState"], 0) + 1
    listed = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none"
    return (
        f"workers: {listed}; desired {g['DesiredCapacity']} "
        f"(min {g['MinSize']}, max {g['MaxSize']})"
    )


def _queues_line(d: Deployment, outs: Mapping[str, str]) -> str:
    sqs = d.client("sqs")
    try:
        tasks = sqs.get_queue_attributes(
            QueueUrl=outs["TaskQueueUrl"],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        dead = sqs.get_queue_attributes(
            QueueUrl=outs["DeadLetterQueueUrl"], AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
    except (ClientError, KeyError) as exc:
        return f"task queue: unknown ({exc})"
    return (
        f"task queue: {tasks['ApproximateNumberOfMessages']} waiting, "
        f"{tasks['ApproximateNumberOfMessagesNotVisible']} in flight; "
        f"dead letters: {dead['ApproximateNumberOfMessages']}"
    )


def _other_queue_line(d: Deployment, prefix: str, name: str) -> str:
    sqs = d.client("sqs")
    try:
        counts = []
        for queue, keys in (
            (name, ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]),
            (dead_letter_name(name), ["ApproximateNumberOfMessages"]),
        ):
            url = sqs.get_queue_url(QueueName=prefix + queue)["QueueUrl"]
            counts.append(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=keys)["Attributes"])
    except ClientError as exc:
        return f"queue {name}: unknown ({exc})"
    tasks, dead = counts
    return (
        f"queue {name}: {tasks['ApproximateNumberOfMessages']} waiting, "
        f"{tasks['ApproximateNumberOfMessagesNotVisible']} in flight; "
        f"dead letters: {dead['ApproximateNumberOfMessages']}"
    )


def _parameter_value(found: Mapping[str, Any], key: str) -> str | None:
    for p in found.get("Parameters", []):
        if p["ParameterKey"] == key:
            return str(p["ParameterValue"])
    return None


def _text(value: int | None) -> str | None:
    return None if value is None else str(value)
