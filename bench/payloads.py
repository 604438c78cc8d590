"""Large payloads and batch submission (``make bench`` runs this after ``python -m bench``).

* A 50-megapixel JPEG through ``grayscale_image.delay(...).get()``: round-trip time
  (median of 3) and the peak memory of the worker's pool processes (``VmHWM``),
  beside the size of the image itself, to show memory stays bounded.
* Sending 500 tasks one ``SendMessage`` each vs inside ``batch_sends()``: SQS
  requests and publish time (median of 3).

Appends a section to ``bench/RESULTS.md`` (or prints it with ``--print``). The endpoint is
ministack unless ``CLOUDWORKER_LOCAL_ENDPOINT`` says otherwise, as for ``python -m bench``
(moto's SQS slows as the queue deepens, which is what 500 sends in a row make).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench import stop_quickly, use_endpoint
from cloudworker.application import create_app
from cloudworker.settings import Settings
from cloudworker.sqs.batch_sends import batch_sends
from deploy import local
from tasks.definitions import register

ROOT = Path(__file__).resolve().parent.parent
MEGAPIXELS_50 = (8660, 5774)


def photo(size: tuple[int, int]) -> bytes:
    """A photo-like JPEG: smooth gradients and mild noise, quality 90."""
    width, height = size
    rng = np.random.default_rng(50)
    x = np.linspace(0, 1, width, dtype=np.float32)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    for channel, (a, b) in enumerate(((200, 40), (60, 150), (120, 90))):
        band = a * x + b * y + rng.normal(0, 6, (height, width)).astype(np.float32)
        pixels[..., channel] = np.clip(band, 0, 255)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def pool_peak_rss_mb(stack: local.Stack, name: str) -> float:
    """The largest peak resident memory (VmHWM) among the worker's pool processes, MiB."""
    parent = stack.pid(name)
    peaks = []
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        for line in Path(f"/proc/{child}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    return max(peaks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.payloads")
    parser.add_argument("--print", action="store_true", help="print instead of appending")
    args = parser.parse_args(argv)
    endpoint = use_endpoint()
    stack = local.Stack(Path(tempfile.mkdtemp(prefix="cloudworker-bench-payloads-")))
    env = local.up(stack, workers=1, flower=False)
    os.environ.update(env)
    app = create_app(Settings.from_env(env))
    tasks = register(app)
    try:
        image = photo(MEGAPIXELS_50)
        tasks.grayscale_image.delay(photo((64, 48))).get(timeout=60)  # warm the worker
        times = []
        for _ in range(3):
            started = time.monotonic()
            grey = tasks.grayscale_image.delay(image).get(timeout=600)
            times.append(time.monotonic() - started)
        out = Image.open(io.BytesIO(grey))
        assert (out.mode, out.size) == ("L", MEGAPIXELS_50)
        peak = pool_peak_rss_mb(stack, "worker1")

        plain, batched = [], []
        requests = 0
        for _ in range(3):
            started = time.monotonic()
            for i in range(500):
                tasks.compute_stats.delay([i])
            plain.append(time.monotonic() - started)
            started = time.monotonic()
            with batch_sends() as batch:
                for i in range(500):
                    tasks.compute_stats.delay([i])
            batched.append(time.monotonic() - started)
            requests = batch.requests
    finally:
        app.services.mailbox.close()
        stop_quickly(stack)
        local.down(stack)

    megapixels = MEGAPIXELS_50[0] * MEGAPIXELS_50[1] / 1e6
    section = "\n".join(
        [
            "",
            "## 8. Large payloads and batch submission (`python -m bench.payloads`)",
            "",
            f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; its own local stack "
            f"on {endpoint}, one worker `-c 2`, no proxy (no latency model).",
            "",
            "| measure | value |",
            "|---|---|",
            f"| 50 MP JPEG ({MEGAPIXELS_50[0]}x{MEGAPIXELS_50[1]}, {megapixels:.1f} MP, "
            f"{len(image) / 1e6:.1f} MB) round trip, median of 3 | "
            f"{statistics.median(times):.2f} s (runs: {', '.join(f'{t:.2f}' for t in times)}) |",
            f"| peak memory of a worker pool process (VmHWM) | {peak:.0f} MiB |",
            f"| for scale: the decoded image, RGB / grey | {megapixels * 3:.0f} MB / "
            f"{megapixels:.0f} MB |",
            f"| 500 tasks sent one `SendMessage` each | 500 requests, "
            f"{statistics.median(plain):.2f} s |",
            f"| 500 tasks sent inside `batch_sends()` | {requests} requests "
            f"({500 - requests} saved), {statistics.median(batched):.2f} s |",
            "",
        ]
    )
    if args.print:
        print(section)
    else:
        with (ROOT / "bench" / "RESULTS.md").open("a") as results:
            results.write(section)
        print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
