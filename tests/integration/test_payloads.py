"""Payloads far beyond an SQS message, through S3 (claim-check), in both directions."""

from __future__ import annotations

import hashlib
import io
import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.integration.conftest import LocalStack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def big_photo() -> bytes:
    """A ~30 MB JPEG: noise at quality 100 hardly compresses."""
    pixels = np.random.default_rng(30).integers(0, 256, (2600, 3900, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=100, subsampling=0)
    data = out.getvalue()
    assert len(data) > 28_000_000
    return data


@pytest.fixture(scope="module")
def five_million(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    numbers = np.random.default_rng(5).integers(-(10**12), 10**12, 5_000_000).tolist()
    path = tmp_path_factory.mktemp("ints") / "five_million.txt"
    path.write_text("\n".join(map(str, numbers)) + "\n")
    return path, numbers


def payload_keys(stack: LocalStack) -> set[str]:
    s3 = stack.client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=stack.settings.bucket, Prefix="payloads/"
    )
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def test_30_mb_photo_round_trips_through_delay(stack: LocalStack, big_photo: bytes) -> None:
    before = payload_keys(stack)
    grey = stack.tasks.grayscale_image.delay(big_photo).get(timeout=300)
    image = Image.open(io.BytesIO(grey))
    assert (image.format, image.mode, image.size) == ("JPEG", "L", (3900, 2600))
    # The consumed argument is deleted; the result's payload stays with the result.
    assert payload_keys(stack) == before


def test_5_million_integers_round_trip_through_delay(
    stack: LocalStack, five_million: tuple[Path, list[int]]
) -> None:
    _, numbers = five_million
    before = payload_keys(stack)
    stats = stack.tasks.compute_stats.delay(numbers).get(timeout=300)
    ordered = sorted(numbers)
    assert stats["count"] == 5_000_000
    assert (stats["min"], stats["max"]) == (ordered[0], ordered[-1])
    assert stats["median"] * 2 == ordered[2_499_999] + ordered[2_500_000]
    assert stats["mean"] == sum(numbers) / len(numbers)
    assert payload_keys(stack) == before


def test_30_mb_photo_through_the_cli(stack: LocalStack, big_photo: bytes, tmp_path: Path) -> None:
    source = tmp_path / "photo.jpg"
    source.write_bytes(big_photo)
    out = stack.cli("grayscale", str(source), "-o", str(tmp_path / "grey.png"), timeout=300)
    assert out.returncode == 0, out.stderr
    image = Image.open(tmp_path / "grey.png")
    assert (image.format, image.mode, image.size) == ("PNG", "L", (3900, 2600))


def test_5_million_integers_through_the_cli(
    stack: LocalStack, five_million: tuple[Path, list[int]]
) -> None:
    path, numbers = five_million
    out = stack.cli("stats", str(path), "--json", timeout=300)
    assert out.returncode == 0, out.stderr
    assert '"count": 5000000' in out.stdout
    assert f'"min": {min(numbers)}' in out.stdout


def test_tampered_payload_is_refused_not_looped(stack: LocalStack) -> None:
    """A payload altered in S3 fails the digest check: a clear error, once."""
    from cloudworker.errors import PayloadError

    codec = stack.app.services.codec
    image = bytes(range(256)) * 4096  # 1 MiB, checked in
    body = codec.loads(codec.dumps([[image], {}, None]))
    ref = body[0][0]
    stack.client("s3").put_object(Bucket=stack.settings.bucket, Key=ref.key, Body=b"evil")
    result = stack.app.send_task("tasks.grayscale_image", args=[ref])
    with pytest.raises(PayloadError, match="does not match its digest"):
        result.get(timeout=60)
    assert stack.worker_alive()


def test_lifecycle_rules_expire_payloads_results_groups_chords_and_revocations(
    stack: LocalStack,
) -> None:
    rules = stack.client("s3").get_bucket_lifecycle_configuration(Bucket=stack.settings.bucket)
    expiry = {r["Filter"]["Prefix"]: r["Expiration"]["Days"] for r in rules["Rules"]}
    assert expiry == {
        "payloads/": 1,
        "results/": stack.settings.result_expiry_days,
        "groups/": stack.settings.result_expiry_days,
        "chords/": stack.settings.result_expiry_days,
        "revoked/": 1,
    }


def test_large_result_is_a_raw_object_beside_its_record(
    stack: LocalStack, big_photo: bytes
) -> None:
    result = stack.tasks.grayscale_image.delay(big_photo)
    grey = result.get(timeout=300)
    s3 = stack.client("s3")
    record = json.loads(
        s3.get_object(Bucket=stack.settings.bucket, Key=f"results/{result.id}.json")["Body"].read()
    )
    ref = record["result"]
    assert ref["__type__"] == "cloudworker.payload"
    assert ref["__value__"]["key"].startswith(f"results/{result.id}/")
    stored = s3.get_object(Bucket=stack.settings.bucket, Key=ref["__value__"]["key"])["Body"].read()
    assert stored == grey
    assert ref["__value__"]["sha256"] == hashlib.sha256(grey).hexdigest()


def test_a_chain_carries_large_arguments_to_its_later_steps(stack: LocalStack) -> None:
    """A later step's large argument travels inside the first message; each step reads
    (and deletes) only its own copy, under its own task id."""
    numbers = list(range(100_000))  # about 600 KB of JSON: the chain itself goes to S3
    pixels = np.random.default_rng(7).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")  # about 480 KB: a reference in the chain
    before = payload_keys(stack)
    steps = (
        stack.tasks.compute_stats.si([1, 2, 3])
        | stack.tasks.compute_stats.si(numbers)
        | stack.tasks.grayscale_image.si(out.getvalue())
        | stack.tasks.grayscale_image.si(out.getvalue(), "JPEG")
    )
    result = steps.delay()
    assert Image.open(io.BytesIO(result.get(timeout=120))).format == "JPEG"
    assert Image.open(io.BytesIO(result.parent.get(timeout=60))).mode == "L"
    assert result.parent.parent.get(timeout=60)["median"] == Decimal("49999.5")
    assert result.parent.parent.parent.get(timeout=60)["count"] == 3
    # Every payload is under the id of the step whose message carried it: the copies
    # made to pass references along stay for the lifecycle rule.
    ids, step = set(), result
    while step is not None:
        ids.add(step.id)
        step = step.parent
    left = payload_keys(stack) - before
    assert left
    assert {key.split("/")[1] for key in left} <= ids
