"""End to end on the local stack: real endpoint over HTTP, real worker process."""

from __future__ import annotations

import io
import json
import struct
import zlib
from decimal import Decimal
from pathlib import Path

import pytest
from celery import group
from PIL import Image

from cloudworker.errors import InvalidImage, InvalidNumbers, LimitExceeded
from tests.integration.conftest import ROOT, LocalStack

pytestmark = pytest.mark.integration


def jpeg(width: int = 64, height: int = 48) -> bytes:
    image = Image.new("RGB", (width, height), (200, 30, 30))
    image.paste((30, 200, 30), (0, 0, width // 2, height))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG that declares ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )


# -- the Python API ------------------------------------------------------------------------


def test_compute_stats_through_delay(stack: LocalStack) -> None:
    big = 2**70
    result = stack.tasks.compute_stats.delay([5, -3, big, 8]).get(timeout=60)
    assert result == {
        "count": 4,
        "mean": (5 - 3 + big + 8) / 4,
        "median": Decimal("6.5"),
        "min": -3,
        "max": big,
    }


def test_grayscale_image_through_delay(stack: LocalStack) -> None:
    grey = stack.tasks.grayscale_image.delay(jpeg()).get(timeout=60)
    image = Image.open(io.BytesIO(grey))
    assert (image.format, image.mode, image.size) == ("JPEG", "L", (64, 48))
    # Pure red (200, 30, 30) is luma 79 and green (30, 200, 30) is 130; JPEG moves it a little.
    assert abs(int(image.getpixel((60, 24))) - 79) <= 4  # type: ignore[arg-type]
    assert abs(int(image.getpixel((4, 24))) - 130) <= 4  # type: ignore[arg-type]


def test_grayscale_image_in_another_format(stack: LocalStack) -> None:
    grey = stack.tasks.grayscale_image.delay(jpeg(), "PNG").get(timeout=60)
    assert Image.open(io.BytesIO(grey)).format == "PNG"


def test_group_results(stack: LocalStack) -> None:
    jobs = group(stack.tasks.compute_stats.s([i, i + 1, i + 2]) for i in range(6))
    assert [r["median"] for r in jobs.apply_async().get(timeout=60)] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("task", "argument", "error", "reason"),
    [
        ("compute_stats", [1, "2", 3], InvalidNumbers, "item 1 is not an integer: '2'"),
        ("compute_stats", [], InvalidNumbers, "no integers"),
        ("compute_stats", "1 2 3", InvalidNumbers, "list of integers"),
        ("grayscale_image", b"", InvalidImage, "empty"),
        ("grayscale_image", b"GIF89a" + b"\x00" * 20, InvalidImage, "zero size"),
        ("grayscale_image", jpeg()[:300], InvalidImage, "damaged or truncated"),
        ("grayscale_image", png_bomb(30_000, 30_000), LimitExceeded, "900000000"),
    ],
)
def test_bad_input_raises_the_typed_error_with_the_workers_reason(
    stack: LocalStack, task: str, argument: object, error: type[Exception], reason: str
) -> None:
    with pytest.raises(error, match=reason):
        getattr(stack.tasks, task).delay(argument).get(timeout=60)
    # Not retried, not looping, and the worker goes on serving.
    assert stack.wait_for_depth(stack.settings.task_queue_name, 0)
    assert stack.tasks.compute_stats.delay([2, 4]).get(timeout=60)["mean"] == 3.0
    assert stack.worker_alive()


def test_result_fetched_by_id_from_a_brand_new_process(stack: LocalStack) -> None:
    task_id = stack.tasks.compute_stats.delay([10, 20, 30]).id
    stack.tasks.compute_stats.AsyncResult(task_id).get(timeout=60)
    code = f"from tasks import app; print(app.AsyncResult({task_id!r}).get(timeout=30)['median'])"
    out = stack.run("-c", code, timeout=60)
    assert (out.returncode, out.stdout.strip()) == (0, "20"), out.stderr
    record = stack.client("s3").get_object(
        Bucket=stack.settings.bucket, Key=f"results/{task_id}.json"
    )
    stored = json.loads(record["Body"].read())
    assert (stored["status"], stored["result"]["median"], stored["task_id"]) == (
        "SUCCESS",
        20,
        task_id,
    )


# -- the command line ----------------------------------------------------------------------


def test_cli_stats_json_is_exact(stack: LocalStack, tmp_path: Path) -> None:
    numbers = tmp_path / "numbers.txt"
    big = 2**80
    numbers.write_bytes(f" {big}\t-1\r\n+{big + 2}\n\n3\n".encode())
    out = stack.cli("stats", str(numbers), "--json")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        f'{{"count": 4, "mean": {(2 * big + 4) / 4!r}, '
        f'"median": {(big + 3) // 2}.5, "min": -1, "max": {big + 2}}}'
    )


def test_cli_stats_text(stack: LocalStack) -> None:
    out = stack.cli("stats", "examples/input.txt")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "count", "15", "mean", "85.86666666666666", "median", "16", "min", "-7", "max", "1000",
    ]  # fmt: skip


def test_cli_grayscale_default_output_name(stack: LocalStack, tmp_path: Path) -> None:
    out = stack.cli("grayscale", str(ROOT / "examples" / "image.jpg"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    image = Image.open(tmp_path / "output_image.jpg")
    assert (image.format, image.mode) == ("JPEG", "L")
    assert image.size == Image.open(ROOT / "examples" / "image.jpg").size


def test_cli_grayscale_output_format_follows_extension(stack: LocalStack, tmp_path: Path) -> None:
    source = tmp_path / "in.jpg"
    source.write_bytes(jpeg())
    out = stack.cli("grayscale", str(source), "-o", str(tmp_path / "out.png"))
    assert out.returncode == 0, out.stderr
    assert Image.open(tmp_path / "out.png").format == "PNG"


@pytest.mark.parametrize(
    ("command", "content", "reason"),
    [
        ("stats", b"1 2 abc\n", "line 1: 'abc' is not an integer"),
        ("stats", b"", "contains no integers"),
        ("stats", b"\x00\xff\xfe junk", "not a text file of integers"),
        ("stats", b"1\n2\n3.5\n", "line 3: '3.5' is not an integer"),
        ("grayscale", b"", "image is empty"),
        ("grayscale", b"this is not an image", "not an image"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(
    stack: LocalStack, tmp_path: Path, command: str, content: bytes, reason: str
) -> None:
    path = tmp_path / ("input.txt" if command == "stats" else "input.jpg")
    path.write_bytes(content)
    out = stack.cli(command, str(path), "-o", str(tmp_path / "o.jpg")) if command == "grayscale" \
        else stack.cli(command, str(path))  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr
    assert reason in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_bad_image_reported_by_the_worker(stack: LocalStack, tmp_path: Path) -> None:
    path = tmp_path / "truncated.jpg"
    path.write_bytes(jpeg()[:400])
    out = stack.cli("grayscale", str(path), "-o", str(tmp_path / "o.jpg"))
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and "truncated" in out.stderr.lower(), out.stderr
    assert stack.worker_alive()


def test_cli_missing_file_exits_2(stack: LocalStack) -> None:
    out = stack.cli("stats", "/nonexistent/numbers.txt")
    assert (out.returncode, out.stderr.strip()) == (
        2,
        "error: /nonexistent/numbers.txt: no such file",
    )


def test_cli_unprovisioned_queue_exits_1(stack: LocalStack, tmp_path: Path) -> None:
    numbers = tmp_path / "n.txt"
    numbers.write_text("1 2 3\n")
    out = stack.run(
        "-m", "client", "stats", str(numbers), env={"CLOUDWORKER_QUEUE_PREFIX": "not-provisioned-"}
    )
    assert out.returncode == 1
    assert "does not exist" in out.stderr and out.stderr.count("\n") == 1, out.stderr


def test_cli_timeout_exits_1(stack: LocalStack, tmp_path: Path) -> None:
    numbers = tmp_path / "n.txt"
    numbers.write_text("1 2 3\n")
    # A queue nobody consumes: provisioned under another name, no worker on it.
    stack.client("sqs").create_queue(QueueName=f"{stack.settings.queue_prefix}idle")
    out = stack.run(
        "-m",
        "client",
        "stats",
        str(numbers),
        "--timeout",
        "2",
        env={"CLOUDWORKER_TASK_QUEUE": "idle"},
    )
    assert out.returncode == 1
    assert out.stderr.startswith("error: timed out"), out.stderr


# -- response queues -----------------------------------------------------------------------


def test_client_deletes_its_response_queue_on_exit(stack: LocalStack) -> None:
    code = (
        "from tasks import app, compute_stats\n"
        "compute_stats.delay([1, 2]).get(timeout=30)\n"
        "sqs = app.services.queues()\n"
        "print(app.services.mailbox.name, app.services.mailbox.url in "
        "sqs.list_urls(app.services.settings.response_queue_prefix))\n"
    )
    out = stack.run("-c", code, timeout=60)
    assert out.returncode == 0, out.stderr
    name, existed = out.stdout.split()
    assert existed == "True"  # the queue was there while the client ran...
    assert name not in stack.response_queues()  # ...and is gone once it exited


def test_crashed_clients_queue_is_reaped(stack: LocalStack) -> None:
    before = set(stack.response_queues())
    code = (
        "import os\n"
        "from tasks import compute_stats\n"
        "compute_stats.delay([1, 2]).get(timeout=30)\n"
        "os._exit(9)  # dies without running its exit handlers\n"
    )
    crashed = stack.run("-c", code, timeout=60)
    assert crashed.returncode == 9, crashed.stderr
    leftover = set(stack.response_queues()) - before
    assert len(leftover) == 1
    reaped = stack.cli("reap", "--max-age", "0")
    assert reaped.returncode == 0, reaped.stderr
    assert leftover <= set(reaped.stdout.split())
    assert leftover.isdisjoint(stack.response_queues())
