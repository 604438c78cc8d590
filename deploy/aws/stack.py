"""CloudFormation calls of ``python -m deploy aws``: find, create or update, wait, delete.

CloudFormation works asynchronously: a create, update or delete returns at once
and the stack then changes for minutes. :func:`wait` polls it and prints each
new stack event as it happens (what a person watching wants to see), calling a
hook on every poll (the release upload waits there for the bucket), until the
stack reaches a terminal status.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, TextIO

import yaml
from botocore.exceptions import ClientError

__all__ = [
    "MAX_TEMPLATE_BODY",
    "StackError",
    "compact",
    "compact_data",
    "create_or_update",
    "delete",
    "find",
    "latest_event",
    "outputs",
    "parameters",
    "resource_id",
    "wait",
]

#: The largest template CloudFormation accepts inline (TemplateBody), in bytes.
MAX_TEMPLATE_BODY = 51_200
#: Statuses a stack rests in after a successful operation.
SUCCEEDED = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "DELETE_COMPLETE"})


class StackError(Exception):
    """A stack operation failed or the stack is in a state that forbids it."""


def compact(body: str) -> str:
    """``body``, a YAML template, as the same template in JSON without whitespace.

    The committed template is documented by its comments and is larger than the
    51,200 bytes CloudFormation takes inline; CloudFormation reads JSON templates
    as well as YAML, so what is sent is the parsed template dumped again, with no
    comment and no indentation, the same data by construction. The template writes
    its intrinsic functions in their long form (``Fn::Sub``), so a plain YAML
    parser reads all of it; a value JSON cannot hold (an unquoted date) is a
    TypeError here, not a surprise in CloudFormation.
    """
    return compact_data(yaml.safe_load(body))


def compact_data(template: Any) -> str:
    """``template``, parsed, as compact JSON (what :func:`compact` sends)."""
    return json.dumps(template, separators=(",", ":"), ensure_ascii=False)


def find(cfn: Any, name: str) -> dict[str, Any] | None:
    """The stack ``name`` (or stack id), or ``None`` when there is none."""
    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        if _no_such_stack(exc):
            return None
        raise
    if not stacks or stacks[0]["StackStatus"] == "DELETE_COMPLETE":
        return None
    stack: dict[str, Any] = stacks[0]
    return stack


def outputs(stack: Mapping[str, Any]) -> dict[str, str]:
    """The stack's outputs by key."""
    return {o["OutputKey"]: str(o["OutputValue"]) for o in stack.get("Outputs", [])}


def resource_id(cfn: Any, stack_name: str, logical_id: str) -> str | None:
    """The physical id of a resource once it is created, else ``None``."""
    try:
        for page in cfn.get_paginator("list_stack_resources").paginate(StackName=stack_name):
            for summary in page["StackResourceSummaries"]:
                if summary.get("LogicalResourceId") != logical_id:
                    continue
                if not str(summary.get("ResourceStatus", "")).endswith("_COMPLETE"):
                    return None
                physical: str | None = summary.get("PhysicalResourceId") or None
                return physical
    except ClientError as exc:
        if _no_such_stack(exc):
            return None
        raise
    return None


def parameters(
    declared: Mapping[str, str | None],
    given: Mapping[str, str | None],
    *,
    previous: Collection[str] = (),
) -> list[dict[str, Any]]:
    """CloudFormation parameters: given values, else the stack's previous ones, else defaults.

    ``declared`` maps the template's parameters to their defaults. Every
    parameter is passed explicitly, so that the stack records each value it
    was created with and a later update can keep it.
    """
    unknown = set(given) - set(declared)
    if unknown:
        raise StackError(f"the template has no parameter {', '.join(sorted(unknown))}")
    result: list[dict[str, Any]] = []
    for key, default in declared.items():
        value = given.get(key)
        if value is not None:
            result.append({"ParameterKey": key, "ParameterValue": value})
        elif key in previous:
            result.append({"ParameterKey": key, "UsePreviousValue": True})
        elif default is not None:
            result.append({"ParameterKey": key, "ParameterValue": default})
        else:
            raise StackError(f"parameter {key} needs a value")
    return result


def create_or_update(
    cfn: Any,
    name: str,
    body: str,
    params: list[dict[str, Any]],
    *,
    exists: bool,
    tags: Mapping[str, str],
    staged: Callable[[str], str] | None = None,
) -> bool:
    """Start creating or updating stack ``name``; return False when there is nothing to do.

    ``body`` is sent :func:`compact` (JSON): the size limit applies to what is sent.
    A larger template goes by URL when ``staged`` is given: it stores the JSON (in
    the stack's bucket) and returns the object's URL.
    """
    body = compact(body)
    size = len(body.encode())
    template: dict[str, str] = {"TemplateBody": body}
    if size > MAX_TEMPLATE_BODY:
        if staged is None:
            raise StackError(
                f"the template is {size} bytes as compact JSON, more than {MAX_TEMPLATE_BODY}"
            )
        template = {"TemplateURL": staged(body)}
    request: dict[str, Any] = {
        "StackName": name,
        **template,
        "Parameters": params,
        "Capabilities": ["CAPABILITY_IAM"],
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
    }
    if not exists:
        cfn.create_stack(**request, OnFailure="ROLLBACK")
        return True
    try:
        cfn.update_stack(**request)
    except ClientError as exc:
        if "No updates are to be performed" in str(exc):
            return False
        raise
    return True


def delete(cfn: Any, stack_id: str) -> None:
    """Start deleting the stack."""
    cfn.delete_stack(StackName=stack_id)


def wait(
    cfn: Any,
    stack_id: str,
    *,
    after: str | None,
    out: TextIO,
    poll: float = 5.0,
    timeout: float = 3600.0,
    on_poll: Callable[[], None] | None = None,
) -> str:
    """Wait until the stack rests, printing its events newer than event ``after``.

    ``after`` is :func:`latest_event` taken before the operation started (``None``
    for a new stack). Returns the final status.
    """
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        if on_poll is not None:
            on_poll()
        _print_new_events(cfn, stack_id, after, seen, out)
        status = _status(cfn, stack_id)
        if not status.endswith("_IN_PROGRESS"):
            _print_new_events(cfn, stack_id, after, seen, out)
            return status
        if time.monotonic() > deadline:
            raise StackError(f"the stack is still {status} after {timeout:.0f} s")
        time.sleep(poll)


def latest_event(cfn: Any, stack_id: str) -> str | None:
    """The id of the stack's newest event (``None`` if it has none or does not exist)."""
    try:
        events = cfn.describe_stack_events(StackName=stack_id)["StackEvents"]
    except ClientError as exc:
        if _no_such_stack(exc):
            return None
        raise
    return str(events[0]["EventId"]) if events else None


def _no_such_stack(exc: ClientError) -> bool:
    """CloudFormation's answer for a stack that does not exist (a ValidationError by text)."""
    return "does not exist" in str(exc)


def _status(cfn: Any, stack_id: str) -> str:
    found = find(cfn, stack_id)
    status: str = found["StackStatus"] if found else "DELETE_COMPLETE"
    return status


def _print_new_events(
    cfn: Any, stack_id: str, after: str | None, seen: set[str], out: TextIO
) -> None:
    """Print the events newer than ``after`` not printed yet, oldest first."""
    fresh: list[dict[str, Any]] = []
    try:
        for page in cfn.get_paginator("describe_stack_events").paginate(StackName=stack_id):
            reached = False
            for event in page["StackEvents"]:  # newest first
                if event["EventId"] == after or event["EventId"] in seen:
                    reached = True
                    break
                fresh.append(event)
            if reached:
                break
    except ClientError as exc:
        if not _no_such_stack(exc):
            raise
    for event in reversed(fresh):
        seen.add(event["EventId"])
        reason = event.get("ResourceStatusReason") or ""
        print(
            f"  {event['Timestamp']:%H:%M:%S}  {event.get('ResourceStatus', ''):<28} "
            f"{event.get('ResourceType', ''):<36} {event.get('LogicalResourceId', '')}"
            + (f"  ({reason})" if reason else ""),
            file=out,
            flush=True,
        )
