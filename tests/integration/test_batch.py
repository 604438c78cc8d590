"""Many inputs at once through the command line: batched sends, bad inputs, a summary."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from tests.integration.conftest import LocalStack

pytestmark = pytest.mark.integration


def test_stats_on_many_files_keeps_going_past_bad_ones(stack: LocalStack, tmp_path: Path) -> None:
    files = []
    for i in range(25):
        path = tmp_path / f"n{i:02}.txt"
        path.write_text("oops\n" if i in (3, 17) else f"{i} {i + 1} {i + 2}\n")
        files.append(str(path))
    out = stack.cli("stats", *files, "--json")
    assert out.returncode == 2
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["file"] for line in lines] == [f for i, f in enumerate(files) if i not in (3, 17)]
    assert [line["median"] for line in lines] == [i + 1 for i in range(25) if i not in (3, 17)]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {files[3]} line 1: 'oops' is not an integer",
        f"error: {files[17]} line 1: 'oops' is not an integer",
    ]
    summary = out.stderr.splitlines()[-1]
    assert re.fullmatch(
        r"25 inputs: 23 done, 2 bad; 23 tasks sent in 3 SQS requests \(20 saved by batching\)",
        summary,
    ), summary
    assert "\r" not in out.stderr  # no progress bar when stderr is not a terminal


def png(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (20, 10), color).save(out, "PNG")
    return out.getvalue()


def test_grayscale_of_a_directory_and_files(stack: LocalStack, tmp_path: Path) -> None:
    album = tmp_path / "album"
    (album / "2024").mkdir(parents=True)
    (album / "red.png").write_bytes(png((255, 0, 0)))
    (album / "2024" / "green.png").write_bytes(png((0, 255, 0)))
    (album / "notes.txt").write_text("not an image, not picked up")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 broken")
    extra = tmp_path / "blue.png"
    extra.write_bytes(png((0, 0, 255)))
    outdir = tmp_path / "grey"
    out = stack.cli("grayscale", str(album), str(broken), str(extra), "-o", str(outdir))
    assert out.returncode == 2
    written = sorted(str(p.relative_to(outdir)) for p in outdir.rglob("*") if p.is_file())
    assert written == ["2024/green.png", "blue.png", "red.png"]
    levels = {
        name: Image.open(outdir / name).getpixel((0, 0))
        for name in ("red.png", "2024/green.png", "blue.png")
    }
    assert levels == {"red.png": 76, "2024/green.png": 150, "blue.png": 29}
    assert f"error: {broken}:" in out.stderr
    assert out.stderr.splitlines()[-1].startswith(
        "4 inputs: 3 done, 1 bad; 4 tasks sent in 1 SQS requests (3 saved"
    )


def test_single_input_contract_is_unchanged(stack: LocalStack, tmp_path: Path) -> None:
    path = tmp_path / "one.txt"
    path.write_text("5 6 7\n")
    out = stack.cli("stats", str(path), "--json")
    assert (out.returncode, out.stdout, out.stderr) == (
        0,
        '{"count": 3, "mean": 6.0, "median": 6, "min": 5, "max": 7}\n',
        "",
    )
