"""Images dropped under inbox/ with plain boto3 come out grey under outbox/."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from cloudworker.errors import LimitExceeded
from cloudworker.objectstore import S3ObjectStore
from tests.integration.conftest import LocalStack
from tests.support.inbox import jpeg, wait_for_object

pytestmark = pytest.mark.integration


def test_dropped_image_appears_grey_in_the_outbox(stack: LocalStack) -> None:
    s3, bucket = stack.client("s3"), stack.settings.bucket
    s3.put_object(Bucket=bucket, Key="inbox/holiday/beach 1.jpg", Body=jpeg((10, 120, 250)))
    found = wait_for_object(s3, bucket, "outbox/holiday/beach 1.jpg")
    image = Image.open(io.BytesIO(found["Body"].read()))
    assert (image.format, image.mode, image.size) == ("JPEG", "L", (120, 80))
    assert abs(int(image.getpixel((60, 40))) - 103) <= 3  # type: ignore[arg-type]


def test_the_same_object_twice_writes_the_same_output(stack: LocalStack) -> None:
    s3, bucket = stack.client("s3"), stack.settings.bucket
    data = jpeg((200, 100, 50))
    s3.put_object(Bucket=bucket, Key="inbox/twice.jpg", Body=data)
    first = wait_for_object(s3, bucket, "outbox/twice.jpg")["Body"].read()
    s3.delete_object(Bucket=bucket, Key="outbox/twice.jpg")
    s3.put_object(Bucket=bucket, Key="inbox/twice.jpg", Body=data)
    second = wait_for_object(s3, bucket, "outbox/twice.jpg")["Body"].read()
    assert first == second


def test_corrupt_image_is_reported_once_and_nothing_loops(stack: LocalStack) -> None:
    s3, bucket = stack.client("s3"), stack.settings.bucket
    s3.put_object(Bucket=bucket, Key="inbox/corrupt.jpg", Body=jpeg((1, 2, 3))[:200])
    found = wait_for_object(s3, bucket, "outbox/corrupt.jpg.error.json")
    report = json.loads(found["Body"].read())
    assert report["key"] == "inbox/corrupt.jpg"
    assert report["error"] == "InvalidImage" and "truncated" in report["reason"]
    # Both queues empty, nothing in flight: no event or task is left to come back.
    assert stack.wait_for_depth(stack.settings.inbox_queue_name, 0)
    assert stack.wait_for_depth(stack.settings.task_queue_name, 0)
    again = s3.head_object(Bucket=bucket, Key="outbox/corrupt.jpg.error.json")
    assert again["LastModified"] == found["LastModified"]
    assert stack.worker_log().count("inbox: queued inbox/corrupt.jpg") == 1
    assert stack.worker_alive()


def test_an_object_over_the_limit_is_refused_from_its_headers(stack: LocalStack) -> None:
    """What keeps a 1 GiB upload out of a pool process: S3 says the size before the body."""
    s3, bucket = stack.client("s3"), stack.settings.bucket
    s3.put_object(Bucket=bucket, Key="inbox-limit/blob", Body=b"x" * 5000)
    store = S3ObjectStore(s3, bucket)
    with pytest.raises(LimitExceeded, match="5,000 bytes, over the limit of 4,999"):
        store.get("inbox-limit/blob", max_bytes=4999)
    assert store.get("inbox-limit/blob", max_bytes=5000) == b"x" * 5000
