"""The provisioning step: the queues and the bucket cloudworker needs, created explicitly.

Shared by the local stack (``make up``) and by deployments that do not use the
CloudFormation template. Idempotent: running it again brings existing
resources to the configured attributes. Queues are never created as a side
effect of the first message (see :mod:`tasks.sqs`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from config import Settings
from tasks import keys
from tasks.queues import is_gone

__all__ = ["Provisioned", "provision"]

#: Receives before a task message is moved to the dead-letter queue.
MAX_RECEIVE_COUNT = 5
#: Days an unconsumed claim-check payload is kept.
PAYLOAD_EXPIRY_DAYS = 1
#: Days a stored revocation is kept: it is in force for Celery's REVOKE_EXPIRES (3 h),
#: and a lifecycle rule counts in whole days.
REVOKED_EXPIRY_DAYS = 1


@dataclass(frozen=True)
class Provisioned:
    """What the provisioning step created or updated."""

    bucket: str
    task_queue_url: str
    dead_letter_queue_url: str
    inbox_queue_url: str


def provision(settings: Settings, *, sqs: Any, s3: Any) -> Provisioned:
    """Create or update the bucket, the task, dead-letter and inbox-events queues."""
    _ensure_bucket(s3, settings)
    dlq_url = _ensure_queue(
        sqs, settings.dead_letter_queue_name, {"MessageRetentionPeriod": "1209600"}
    )
    redrive = json.dumps(
        {"deadLetterTargetArn": _arn_of(sqs, dlq_url), "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
    )
    task_url = _ensure_queue(
        sqs,
        settings.task_queue_name,
        {
            "VisibilityTimeout": str(settings.visibility_timeout),
            "ReceiveMessageWaitTimeSeconds": str(settings.wait_seconds),
            "RedrivePolicy": redrive,
        },
    )
    inbox_url = _ensure_inbox(sqs, s3, settings, redrive)
    return Provisioned(settings.bucket, task_url, dlq_url, inbox_url)


def _ensure_inbox(sqs: Any, s3: Any, settings: Settings, redrive: str) -> str:
    """The queue S3 notifies of objects created under the inbox prefix, and the notification."""
    url = _ensure_queue(
        sqs, settings.inbox_queue_name, {"VisibilityTimeout": "60", "RedrivePolicy": redrive}
    )
    arn = _arn_of(sqs, url)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "S3InboxEvents",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": f"arn:aws:s3:::{settings.bucket}"}},
            }
        ],
    }
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    prefix_rule = {"Name": "prefix", "Value": settings.inbox_prefix}
    s3.put_bucket_notification_configuration(
        Bucket=settings.bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": "cloudworker-inbox",
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [prefix_rule]}},
                }
            ]
        },
    )
    return url


def _arn_of(sqs: Any, url: str) -> str:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    arn: str = attributes["Attributes"]["QueueArn"]
    return arn


def _ensure_queue(sqs: Any, name: str, attributes: dict[str, str]) -> str:
    try:
        url: str = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as exc:
        if not is_gone(exc):
            raise
        created: str = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        return created
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


def _ensure_bucket(s3: Any, settings: Settings) -> None:
    bucket = settings.bucket
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
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
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    if str(s3.meta.endpoint_url).startswith("https://"):
        # On AWS, refuse plain HTTP outright (the local endpoint speaks only HTTP).
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(_https_only(bucket)))
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={
            "Rules": [
                _expiry_rule("expire-payloads", keys.PAYLOADS, PAYLOAD_EXPIRY_DAYS),
                _expiry_rule("expire-results", keys.RESULTS, settings.result_expiry_days),
                _expiry_rule("expire-groups", keys.GROUPS, settings.result_expiry_days),
                _expiry_rule("expire-chords", keys.CHORDS, settings.result_expiry_days),
                _expiry_rule("expire-revoked", keys.REVOKED, REVOKED_EXPIRY_DAYS),
            ]
        },
    )


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
