"""What ``python -m deploy aws down`` removes besides the stack itself.

* The bucket's objects: CloudFormation cannot delete a bucket that holds any.
  The releases are the deploy command's own and always go; everything else
  (results, payloads, images) is the user's data and goes only with
  ``--empty-bucket``.
* What processes created at run time, outside the stack: response queues
  (``<prefix>resp-*``), receiver queues (``<prefix>rx-*``) and the SNS topics
  of Celery's events and remote control (``<prefix>celeryev`` ...).
* Flower's password parameter, which ``up`` created.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from cloudworker.queues import SQSQueueService, name_of
from cloudworker.settings import Settings

__all__ = [
    "RELEASES_PREFIX",
    "delete_objects",
    "delete_parameter",
    "delete_runtime_queues",
    "delete_runtime_topics",
    "user_objects",
]

RELEASES_PREFIX = "releases/"
#: The exchanges kombu's SNS fanout turns into topics named <prefix><exchange>:
#: Celery's events, its remote control, and the control replies ("." becomes "-").
FANOUT_EXCHANGES = ("celeryev", "celery-pidbox", "reply-celery-pidbox")


def user_objects(s3: Any, bucket: str, *, limit: int = 1000) -> list[str]:
    """Up to ``limit`` keys of the bucket that are not releases ([] if no bucket)."""
    keys: list[str] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                if not item["Key"].startswith(RELEASES_PREFIX):
                    keys.append(item["Key"])
                    if len(keys) >= limit:
                        return keys
    except ClientError as exc:
        if _code(exc) == "NoSuchBucket":
            return []
        raise
    return keys


def delete_objects(s3: Any, bucket: str, *, prefix: str = "") -> int:
    """Delete every object under ``prefix`` and abort unfinished uploads; return the count."""
    deleted = 0
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
                deleted += len(keys)
        uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
        for upload in uploads:
            s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    except ClientError as exc:
        if _code(exc) == "NoSuchBucket":
            return deleted
        raise
    return deleted


def delete_runtime_queues(sqs: Any, prefix: str) -> list[str]:
    """Delete the response and receiver queues under ``prefix``; return their names."""
    settings = Settings(queue_prefix=prefix)
    queues = SQSQueueService(sqs)  # paginated listing; a queue already gone is no error
    names: list[str] = []
    for queue_prefix in (settings.response_queue_prefix, settings.receiver_queue_prefix):
        for url in queues.list_urls(queue_prefix):
            queues.delete_queue(url)
            names.append(name_of(url))
    return names


def delete_runtime_topics(sns: Any, prefix: str) -> list[str]:
    """Delete the fanout topics of the stack's prefix; return their names."""
    wanted = {f"{prefix}{exchange}" for exchange in FANOUT_EXCHANGES}
    deleted: list[str] = []
    for page in sns.get_paginator("list_topics").paginate():
        for topic in page.get("Topics", []):
            arn = topic["TopicArn"]
            name = arn.rsplit(":", 1)[-1]
            if name in wanted:
                sns.delete_topic(TopicArn=arn)
                deleted.append(name)
    return deleted


def delete_parameter(ssm: Any, name: str) -> bool:
    """Delete SSM parameter ``name``; return whether it existed."""
    try:
        ssm.delete_parameter(Name=name)
    except ssm.exceptions.ParameterNotFound:
        return False
    return True


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
