"""What provisioning may change on a bucket, as S3 answers it, to compare before and after."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

__all__ = ["bucket_state"]


def bucket_state(s3: Any, bucket: str) -> dict[str, Any]:
    """Encryption, lifecycle rules, notifications, policy and tags of ``bucket``.

    A policy or tag set the bucket does not have reads as ``None``.
    """
    notifications = s3.get_bucket_notification_configuration(Bucket=bucket)
    notifications.pop("ResponseMetadata", None)
    return {
        "encryption": s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"],
        "lifecycle": s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"],
        "policy": _or_none(lambda: json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])),
        "notifications": notifications,
        "tags": _or_none(lambda: s3.get_bucket_tagging(Bucket=bucket)["TagSet"]),
    }


def _or_none(read: Any) -> Any:
    try:
        return read()
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            return None
        raise
