"""Provisioning onto a bucket a user already has: theirs is kept, cloudworker's added.

A user points cloudworker at a bucket of their own: SSE-KMS under their key, a
lifecycle rule, a bucket policy, an event notification to a queue of theirs and
tags. ``python -m deploy provision``, run twice against the local endpoint, must
keep all of it, add cloudworker's own rules beside, and change nothing the second
time. A notification of theirs that overlaps the inbox prefix is refused, naming it,
before anything is changed.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pytest

from deploy import endpoints
from tests.integration.conftest import LocalStack
from tests.support.buckets import bucket_state

pytestmark = pytest.mark.integration

KEY_ID = "arn:aws:kms:us-east-1:000000000000:key/11111111-2222-3333-4444-555555555555"


def state(stack: LocalStack, bucket: str) -> dict[str, Any]:
    """Everything provisioning could change on ``bucket``, as S3 answers it."""
    return bucket_state(stack.client("s3"), bucket)


def users_bucket(stack: LocalStack, inbox_overlap: bool = False) -> tuple[str, str]:
    """A bucket as a user has it, and the ARN of the queue its notification goes to."""
    s3, sqs = stack.client("s3"), stack.client("sqs")
    bucket = f"users-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": KEY_ID,
                    },
                    "BucketKeyEnabled": True,
                }
            ]
        },
    )
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "users-archive",
                    "Filter": {"Prefix": "archive/"},
                    "Status": "Enabled",
                    "Expiration": {"Days": 365},
                }
            ]
        },
    )
    s3.put_bucket_policy(
        Bucket=bucket,
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "UsersReadOnly",
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:DeleteObject",
                        "Resource": f"arn:aws:s3:::{bucket}/archive/*",
                    }
                ],
            }
        ),
    )
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "team", "Value": "data"}]})
    url = sqs.create_queue(QueueName=f"users-events-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    prefix = "inbox/mine/" if inbox_overlap else "uploads/"
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": "users-uploads",
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
                }
            ]
        },
    )
    return bucket, arn


def provision(stack: LocalStack, bucket: str) -> Any:
    return stack.run(
        "-m",
        "deploy",
        "provision",
        env={"CLOUDWORKER_BUCKET": bucket, "CLOUDWORKER_QUEUE_PREFIX": f"{bucket}-"},
        timeout=120,
    )


def test_provisioning_keeps_what_the_user_set_and_adds_its_own_beside(stack: LocalStack) -> None:
    bucket, users_queue = users_bucket(stack)
    before = state(stack, bucket)
    first = provision(stack, bucket)
    assert first.returncode == 0, first.stderr
    after = state(stack, bucket)
    # Their encryption (their KMS key), tags and policy are as they were.
    assert after["encryption"] == before["encryption"]
    assert after["tags"] == before["tags"]
    assert after["policy"] == before["policy"]
    # Their lifecycle rule, with cloudworker's beside it.
    assert after["lifecycle"][0] == before["lifecycle"][0]
    assert {rule["ID"] for rule in after["lifecycle"]} == {
        "users-archive",
        "expire-payloads",
        "expire-results",
        "expire-groups",
        "expire-chords",
        "expire-revoked",
    }
    # Their notification, with cloudworker's inbox notification beside it.
    queues = {q["Id"]: q for q in after["notifications"]["QueueConfigurations"]}
    assert set(queues) == {"users-uploads", "cloudworker-inbox"}
    assert queues["users-uploads"]["QueueArn"] == users_queue
    # A second run changes nothing.
    second = provision(stack, bucket)
    assert second.returncode == 0, second.stderr
    assert state(stack, bucket) == after


def test_a_notification_overlapping_the_inbox_is_refused_before_anything_changes(
    stack: LocalStack,
) -> None:
    bucket, _ = users_bucket(stack, inbox_overlap=True)
    before = state(stack, bucket)
    refused = provision(stack, bucket)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"error: bucket {bucket}: event notification 'users-uploads' (QueueConfigurations, "
        "prefix 'inbox/mine/') overlaps cloudworker's inbox prefix 'inbox/'; S3 cannot send "
        "both. Change its filter, CLOUDWORKER_INBOX_PREFIX or CLOUDWORKER_S3_PREFIX "
        "(nothing was changed)"
    ]
    assert state(stack, bucket) == before
    sqs = stack.client("sqs")
    assert not sqs.list_queues(QueueNamePrefix=f"{bucket}-").get("QueueUrls")


def test_a_kms_key_that_cannot_be_used_is_refused_before_anything_changes(
    stack: LocalStack,
) -> None:
    if endpoints.chosen(os.environ).name == "ministack":
        pytest.skip("this endpoint (ministack, its SERVICES) keeps no KMS keys")
    kms = stack.client("kms")
    made = kms.create_key()["KeyMetadata"]
    key = made["Arn"]
    kms.disable_key(KeyId=made["KeyId"])  # moto takes only the id here
    bucket, _ = users_bucket(stack)
    s3 = stack.client("s3")
    by_default = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": by_default}]
        },
    )
    before = state(stack, bucket)
    refused = provision(stack, bucket)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"error: bucket {bucket}'s default encryption uses KMS key {key}, which is Disabled: "
        "nothing could be written under it. Enable it or choose another key (nothing was changed)"
    ]
    assert state(stack, bucket) == before
    # The same for a key of cloudworker's setting, on a bucket of its own.
    other = f"users-{uuid.uuid4().hex[:12]}"
    refused = stack.run(
        "-m",
        "deploy",
        "provision",
        env={
            "CLOUDWORKER_BUCKET": other,
            "CLOUDWORKER_QUEUE_PREFIX": f"{other}-",
            "CLOUDWORKER_KMS_KEY": key,
        },
    )
    assert refused.returncode == 1
    assert "error: CLOUDWORKER_KMS_KEY uses KMS key" in refused.stderr
    assert other not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    # Enabled again, it is used.
    kms.enable_key(KeyId=made["KeyId"])
    assert provision(stack, bucket).returncode == 0


def test_more_task_queues_are_provisioned_with_their_dead_letter_queues_and_listed_by_the_cli(
    stack: LocalStack,
) -> None:
    """``provision --queue emails --queue orders.fifo``; ``dlq list --queue emails``."""
    bucket = f"cw-queues-{uuid.uuid4().hex[:8]}"
    prefix = f"{bucket}-"
    done = stack.run(
        "-m", "deploy", "provision", "--queue", "emails", "--queue", "orders.fifo",
        env={"CLOUDWORKER_BUCKET": bucket, "CLOUDWORKER_QUEUE_PREFIX": prefix},
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    sqs = stack.client("sqs")

    def attributes(name: str) -> dict[str, str]:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        found: dict[str, str] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])[
            "Attributes"
        ]
        return found

    for queue, dead_letters in (("emails", "emails-dlq"), ("orders.fifo", "orders-dlq.fifo")):
        redrive = json.loads(attributes(prefix + queue)["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == attributes(prefix + dead_letters)["QueueArn"]
    assert attributes(prefix + "orders.fifo")["FifoQueue"] == "true"
    assert attributes(prefix + "orders-dlq.fifo")["FifoQueue"] == "true"
    url = sqs.get_queue_url(QueueName=prefix + "emails-dlq")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="{not a task")
    listed = stack.run(
        "-m", "client", "dlq", "list", "--queue", "emails",
        env={"CLOUDWORKER_BUCKET": bucket, "CLOUDWORKER_QUEUE_PREFIX": prefix},
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert f"1 dead letter(s) in {prefix}emails-dlq" in listed.stdout, listed.stdout
