"""The provisioning step: the queues and the bucket cloudworker needs, created explicitly.

Shared by the local stack (``make up``) and by deployments that do not use the
CloudFormation template. Queues are never created as a side effect of the first
message (see :mod:`cloudworker.sqs`).

A bucket or queue that exists already may be a user's own, with settings of their
own: those are merged into, never replaced. Everything is read first; what cannot
coexist with what cloudworker needs (an event notification of theirs whose filter
overlaps the inbox prefix: S3 refuses two for the same objects; a KMS key that is
disabled or pending deletion) is refused with :class:`ProvisioningConflict`, naming
it, before anything is changed. Then:

* **default encryption**: theirs is kept (SSE-KMS with their key included); a bucket
  without one, or created here, gets SSE-KMS under ``CLOUDWORKER_KMS_KEY`` if set,
  else SSE-S3 (AES256).
  With that key set, cloudworker's objects are written under it whatever the default;
* **queue encryption**: a queue created here is encrypted with ``CLOUDWORKER_KMS_KEY``
  if set (else SQS's own SSE); an existing queue with a KMS key of its own keeps it;
* **lifecycle rules**: theirs are kept; cloudworker's (by their IDs, ``expire-*``)
  are added beside them, or updated;
* **bucket and queue policies**: their statements are kept; cloudworker's (by Sid)
  are added or updated;
* **event notifications**: theirs are kept (queues, topics, functions, EventBridge);
  cloudworker's (``cloudworker-inbox``) is added or updated;
* **public access block**: a bucket created here blocks all public access; an
  existing bucket keeps its own setting;
* tags, versioning, logging and the rest are not touched.

With a base prefix (``CLOUDWORKER_S3_PREFIX``), cloudworker's lifecycle rules and its
inbox notification cover only keys under it, and their IDs name it, so several
deployments can share one bucket, each with its own rules.

Idempotent: a second run reads the same state and writes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from cloudworker import keys
from cloudworker.queues import is_gone, task_queue_attributes
from cloudworker.settings import Settings, dead_letter_name

log = logging.getLogger(__name__)

__all__ = ["Provisioned", "ProvisioningConflict", "provision", "rule_id"]

#: The ID of cloudworker's event notification on the bucket.
INBOX_NOTIFICATION = "cloudworker-inbox"
#: The Sid of cloudworker's statement in the inbox queue's policy.
INBOX_STATEMENT = "S3InboxEvents"

#: Days an unconsumed claim-check payload is kept.
PAYLOAD_EXPIRY_DAYS = 1
#: Days a stored revocation is kept: it is in force for Celery's REVOKE_EXPIRES (3 h),
#: and a lifecycle rule counts in whole days.
REVOKED_EXPIRY_DAYS = 1


class ProvisioningConflict(Exception):
    """Something of the user's on the bucket cannot coexist with what cloudworker needs."""


@dataclass(frozen=True)
class Provisioned:
    """What the provisioning step created or updated."""

    bucket: str
    task_queue_url: str
    dead_letter_queue_url: str
    inbox_queue_url: str


def rule_id(name: str, settings: Settings) -> str:
    """The ID of one of cloudworker's lifecycle rules or notifications on the bucket.

    Without a base prefix, the name itself (``expire-results``); with one, the
    name and the prefix (``expire-results:team-a/``), one deployment's apart
    from another's in the same bucket.
    """
    return f"{name}:{settings.s3_prefix}" if settings.s3_prefix else name


def provision(
    settings: Settings, *, sqs: Any, s3: Any, kms: Any = None, queues: Sequence[str] = ()
) -> Provisioned:
    """Create or update the bucket, the task, dead-letter and inbox-events queues.

    ``queues``: more task queues (names without the prefix; ``.fifo`` for FIFO ones),
    each with its dead-letter queue, as the first use of a missing one makes them.
    Raises :class:`ProvisioningConflict`, having changed nothing, when the bucket
    holds a setting of the user's that cannot coexist with cloudworker's. With a
    ``kms`` client, the KMS keys in play are checked first as well.
    """
    existing = _bucket_exists(s3, settings.bucket)
    notifications = _notifications(s3, settings.bucket) if existing else {}
    _check_notifications(notifications, settings)
    if kms is not None:
        _check_keys(kms, settings, _encryption_key(s3, settings.bucket) if existing else None)
    _ensure_bucket(s3, settings, existing)
    dlq_url = _ensure_queue(
        sqs, settings, settings.dead_letter_queue_name, {"MessageRetentionPeriod": "1209600"}
    )
    attributes = task_queue_attributes(
        visibility_timeout=settings.visibility_timeout,
        wait_seconds=settings.wait_seconds,
        dead_letter_arn=_arn_of(sqs, dlq_url),
    )
    redrive = attributes["RedrivePolicy"]
    task_url = _ensure_queue(sqs, settings, settings.task_queue_name, attributes)
    inbox_url = _ensure_inbox(sqs, s3, settings, redrive, notifications)
    for queue in queues:
        _ensure_task_queue(sqs, settings, f"{settings.queue_prefix}{queue}")
    return Provisioned(settings.bucket, task_url, dlq_url, inbox_url)


def _ensure_task_queue(sqs: Any, settings: Settings, name: str) -> str:
    """Create or update task queue ``name`` and its dead-letter queue (FIFO ones too)."""
    fifo = {"FifoQueue": "true"} if name.endswith(".fifo") else {}
    dlq_url = _ensure_queue(
        sqs,
        settings,
        dead_letter_name(name),
        {"MessageRetentionPeriod": "1209600", **fifo},
    )
    attributes = task_queue_attributes(
        visibility_timeout=settings.visibility_timeout,
        wait_seconds=settings.wait_seconds,
        dead_letter_arn=_arn_of(sqs, dlq_url),
        fifo=bool(fifo),
    )
    return _ensure_queue(sqs, settings, name, attributes)


def _ensure_inbox(
    sqs: Any, s3: Any, settings: Settings, redrive: str, notifications: dict[str, Any]
) -> str:
    """The queue S3 notifies of objects created under the inbox prefix, and the notification."""
    url = _ensure_queue(
        sqs,
        settings,
        settings.inbox_queue_name,
        {"VisibilityTimeout": "60", "RedrivePolicy": redrive},
    )
    arn = _arn_of(sqs, url)
    statement = {
        "Sid": INBOX_STATEMENT,
        "Effect": "Allow",
        "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": f"arn:aws:s3:::{settings.bucket}"}},
    }
    current = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"]).get(
        "Attributes", {}
    )
    policy = _with_statements(_policy_document(current.get("Policy")), [statement])
    if policy != _policy_document(current.get("Policy")):
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    inbox = settings.s3_prefix + settings.inbox_prefix
    notification = rule_id(INBOX_NOTIFICATION, settings)
    ours = {
        "Id": notification,
        "QueueArn": arn,
        "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": inbox}]}},
    }
    queues = notifications.get("QueueConfigurations", [])
    current = next((q for q in queues if q.get("Id") == notification), None)
    if current is None or _notification_key(current) != _notification_key(ours):
        theirs = [q for q in queues if q.get("Id") != notification]
        s3.put_bucket_notification_configuration(
            Bucket=settings.bucket,
            NotificationConfiguration={**notifications, "QueueConfigurations": [*theirs, ours]},
        )
    return url


def _notification_key(config: dict[str, Any]) -> tuple[Any, ...]:
    """What a queue notification does, whatever spelling S3 answers it with."""
    rules = config.get("Filter", {}).get("Key", {}).get("FilterRules", [])
    return (
        config.get("QueueArn"),
        tuple(sorted(config.get("Events", []))),
        tuple(sorted((str(r.get("Name", "")).lower(), r.get("Value")) for r in rules)),
    )


#: The kinds of event notification a bucket's configuration holds.
_NOTIFICATION_KINDS = (
    "QueueConfigurations",
    "TopicConfigurations",
    "LambdaFunctionConfigurations",
)


def _notifications(s3: Any, bucket: str) -> dict[str, Any]:
    """The bucket's event notifications, as ``put_bucket_notification_configuration`` takes them."""
    found = s3.get_bucket_notification_configuration(Bucket=bucket)
    kept = {kind: found[kind] for kind in _NOTIFICATION_KINDS if found.get(kind)}
    if "EventBridgeConfiguration" in found:
        kept["EventBridgeConfiguration"] = found["EventBridgeConfiguration"]
    return kept


def _check_notifications(notifications: dict[str, Any], settings: Settings) -> None:
    """Refuse a notification of the user's for objects the inbox's would also match."""
    inbox = settings.s3_prefix + settings.inbox_prefix
    for kind in _NOTIFICATION_KINDS:
        for config in notifications.get(kind, []):
            if config.get("Id") == rule_id(INBOX_NOTIFICATION, settings):
                continue
            if not any(str(e).startswith(("s3:ObjectCreated", "s3:*")) for e in config["Events"]):
                continue
            rules = {
                str(rule.get("Name", "")).lower(): str(rule.get("Value", ""))
                for rule in config.get("Filter", {}).get("Key", {}).get("FilterRules", [])
            }
            prefix = rules.get("prefix", "")
            if prefix.startswith(inbox) or inbox.startswith(prefix):
                raise ProvisioningConflict(
                    f"bucket {settings.bucket}: event notification "
                    f"{config.get('Id') or '(no id)'!r} ({kind}, prefix {prefix!r}) overlaps "
                    f"cloudworker's inbox prefix {inbox!r}; S3 cannot send both. Change "
                    "its filter, CLOUDWORKER_INBOX_PREFIX or CLOUDWORKER_S3_PREFIX "
                    "(nothing was changed)"
                )


def _comparable(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _policy_document(text: str | None) -> dict[str, Any]:
    if not text:
        return {"Version": "2012-10-17", "Statement": []}
    document: dict[str, Any] = json.loads(text)
    statements = document.get("Statement", [])
    document["Statement"] = statements if isinstance(statements, list) else [statements]
    return document


def _with_statements(document: dict[str, Any], ours: list[dict[str, Any]]) -> dict[str, Any]:
    """``document`` with ``ours`` added, or put in place of the statements with their Sids."""
    sids = {statement["Sid"] for statement in ours}
    theirs = [s for s in document.get("Statement", []) if s.get("Sid") not in sids]
    return {**document, "Statement": [*theirs, *ours]}


def _arn_of(sqs: Any, url: str) -> str:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    arn: str = attributes["Attributes"]["QueueArn"]
    return arn


def _ensure_queue(sqs: Any, settings: Settings, name: str, attributes: dict[str, str]) -> str:
    """Create queue ``name``, or set cloudworker's attributes on it, keeping its own key."""
    encryption = {"KmsMasterKeyId": settings.kms_key} if settings.kms_key else {}
    try:
        url: str = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as exc:
        if not is_gone(exc):
            raise
        created: str = sqs.create_queue(QueueName=name, Attributes={**attributes, **encryption})[
            "QueueUrl"
        ]
        return created
    if encryption:
        current = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["KmsMasterKeyId"])
        if current.get("Attributes", {}).get("KmsMasterKeyId"):
            encryption = {}  # a key of the queue's own stays
    sqs.set_queue_attributes(QueueUrl=url, Attributes={**attributes, **encryption})
    return url


def _bucket_exists(s3: Any, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if _code(exc) in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise
    return True


def _ensure_bucket(s3: Any, settings: Settings, existing: bool) -> None:
    bucket = settings.bucket
    if not existing:
        create: dict[str, Any] = {"Bucket": bucket}
        if settings.region != "us-east-1":
            create["CreateBucketConfiguration"] = {"LocationConstraint": settings.region}
        s3.create_bucket(**create)
        s3.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
    # A bucket made here gets ours: S3 gives every new bucket SSE-S3, not a choice of theirs.
    if not existing or not _encryption_rules(s3, bucket):
        s3.put_bucket_encryption(
            Bucket=bucket, ServerSideEncryptionConfiguration=_default_encryption(settings)
        )
    if str(s3.meta.endpoint_url).startswith("https://"):
        # On AWS, refuse plain HTTP outright (the local endpoint speaks only HTTP).
        current = _bucket_policy(s3, bucket)
        merged = _with_statements(current, _https_only(bucket)["Statement"])
        if merged != current:
            s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(merged))
    expiring = (
        ("expire-payloads", keys.PAYLOADS, PAYLOAD_EXPIRY_DAYS),
        ("expire-results", keys.RESULTS, settings.result_expiry_days),
        ("expire-groups", keys.GROUPS, settings.result_expiry_days),
        ("expire-chords", keys.CHORDS, settings.result_expiry_days),
        ("expire-revoked", keys.REVOKED, REVOKED_EXPIRY_DAYS),
    )
    ours = [
        _expiry_rule(rule_id(name, settings), settings.s3_prefix + prefix, days)
        for name, prefix, days in expiring
    ]
    current_rules = _lifecycle_rules(s3, bucket)
    ids = {rule["ID"] for rule in ours}
    rules = [rule for rule in current_rules if rule.get("ID") not in ids] + ours
    if _comparable(rules) != _comparable(current_rules):
        s3.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": rules}
        )


def _default_encryption(settings: Settings) -> dict[str, Any]:
    """The default encryption a bucket without one gets: SSE-KMS under the key, else SSE-S3."""
    if settings.kms_key:
        by_default = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": settings.kms_key}
        return {
            "Rules": [{"ApplyServerSideEncryptionByDefault": by_default, "BucketKeyEnabled": True}]
        }
    return {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}


def _encryption_key(s3: Any, bucket: str) -> str | None:
    """The KMS key of the bucket's default encryption, if it is SSE-KMS under one."""
    for rule in _encryption_rules(s3, bucket):
        key = rule.get("ApplyServerSideEncryptionByDefault", {}).get("KMSMasterKeyID")
        if key:
            return str(key)
    return None


def _check_keys(kms: Any, settings: Settings, bucket_key: str | None) -> None:
    """Refuse a KMS key in play that KMS says cannot be used (disabled, being deleted).

    Every write under such a key fails: workers would take tasks and store
    nothing. A key KMS does not describe to us (another account's, no
    ``kms:DescribeKey``, an endpoint without KMS) is not refused: a warning says
    it was not checked.
    """
    in_play = [("CLOUDWORKER_KMS_KEY", settings.kms_key)] if settings.kms_key else []
    if bucket_key:
        in_play.append((f"bucket {settings.bucket}'s default encryption", bucket_key))
    for what, key in in_play:
        try:
            state = str(kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"])
        except Exception as exc:  # noqa: BLE001 - not known is not refused
            log.warning("could not check KMS key %s (%s): %s", key, what, exc)
            continue
        if state != "Enabled":
            raise ProvisioningConflict(
                f"{what} uses KMS key {key}, which is {state}: nothing could be written "
                "under it. Enable it or choose another key (nothing was changed)"
            )


def _encryption_rules(s3: Any, bucket: str) -> list[dict[str, Any]]:
    """The rules of the bucket's default encryption; none when it has none."""
    try:
        found = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    except ClientError as exc:
        if _code(exc) == "ServerSideEncryptionConfigurationNotFoundError":
            return []
        raise
    rules: list[dict[str, Any]] = found.get("Rules", [])
    return rules


def _lifecycle_rules(s3: Any, bucket: str) -> list[dict[str, Any]]:
    try:
        rules: list[dict[str, Any]] = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except ClientError as exc:
        if _code(exc) == "NoSuchLifecycleConfiguration":
            return []
        raise
    return rules


def _bucket_policy(s3: Any, bucket: str) -> dict[str, Any]:
    try:
        text = s3.get_bucket_policy(Bucket=bucket)["Policy"]
    except ClientError as exc:
        if _code(exc) == "NoSuchBucketPolicy":
            return _policy_document(None)
        raise
    return _policy_document(text)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _https_only(bucket: str) -> dict[str, Any]:
    arn = f"arn:aws:s3:::{bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "RefusePlainHttp",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [arn, f"{arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def _expiry_rule(rule_id: str, prefix: str, days: int) -> dict[str, Any]:
    return {
        "ID": rule_id,
        "Filter": {"Prefix": prefix},
        "Status": "Enabled",
        "Expiration": {"Days": days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
    }
