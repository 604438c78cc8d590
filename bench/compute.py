"""The two pure-function benchmarks: no Celery, no AWS, just the work a task does.

* ``stats``: :func:`tasks.compute.stats.compute_stats` on 10 million random int64-range integers
  (a Python list, as a task receives it) against ``statistics.mean`` + ``statistics.median``
  on the same list, the obvious pure-Python way to get the same numbers.
* ``grayscale``: :func:`tasks.compute.imaging.to_grayscale` on a 12-megapixel photo-like
  JPEG against plain Pillow (``open``, ``convert('L')``, ``save`` as JPEG quality 90).

Each runs in its own process (``python -m bench.compute --bench stats``) so a 10-million
item list is gone before the AWS benchmarks start. Inputs come from seeded generators and
are built before timing; results are checked to agree, so a fast wrong answer cannot win.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from io import BytesIO
from typing import Any

import numpy as np
from PIL import Image

from bench.client import emit, progress
from bench.measure import median
from tasks.compute.imaging import to_grayscale
from tasks.compute.stats import compute_stats

__all__ = ["bench_grayscale", "bench_stats", "photo_jpeg"]

SEED = 20_241_125
JPEG_QUALITY = 90


def _timed(function: Callable[[], Any]) -> tuple[float, Any]:
    # A collection triggered by the previous run's garbage must not land in this one.
    gc.collect()
    started = time.perf_counter()
    value = function()
    return time.perf_counter() - started, value


def bench_stats(count: int = 10_000_000, runs: int = 3, baseline_runs: int = 2) -> dict[str, Any]:
    """Time compute_stats and statistics.mean + statistics.median on ``count`` integers."""
    rng = np.random.default_rng(SEED)
    info = np.iinfo(np.int64)
    array = rng.integers(info.min, info.max, size=count, dtype=np.int64, endpoint=True)
    numbers: list[int] = array.tolist()

    ours: list[float] = []
    result: dict[str, Any] = {}
    for index in range(runs):
        seconds, result = _timed(lambda: compute_stats(numbers))
        ours.append(seconds)
        progress(f"compute_stats run {index + 1}/{runs}: {seconds:.3f} s")

    baseline: list[float] = []
    mean_ref: float = 0.0
    median_ref: float = 0.0
    for index in range(baseline_runs):
        seconds, (mean_ref, median_ref) = _timed(
            lambda: (statistics.mean(numbers), statistics.median(numbers))
        )
        baseline.append(seconds)
        progress(f"statistics run {index + 1}/{baseline_runs}: {seconds:.3f} s")

    # The exact median from a full sort (a different algorithm from compute_stats'
    # partition); statistics.median returns a float for an even count, so it can only
    # agree to float precision.
    ordered = np.sort(array)
    middle = count // 2
    if count % 2:
        exact_median = Fraction(int(ordered[middle]))
    else:
        exact_median = Fraction(int(ordered[middle - 1]) + int(ordered[middle]), 2)
    our_median = result["median"]
    our_median_exact = Fraction(our_median) if isinstance(our_median, (int, Decimal)) else None
    return {
        "count": count,
        "ours_s": ours,
        "baseline_s": baseline,
        "ours_median_s": median(ours),
        "baseline_median_s": median(baseline),
        "speedup": median(baseline) / median(ours),
        "mean": result["mean"],
        "mean_statistics": float(mean_ref),
        "mean_equal": result["mean"] == float(mean_ref),
        "mean_rel_diff": abs(result["mean"] - float(mean_ref)) / max(abs(float(mean_ref)), 1.0),
        "median": str(our_median),
        "median_statistics": float(median_ref),
        "median_exact": our_median_exact == exact_median,
        "median_matches_statistics": float(exact_median) == float(median_ref),
    }


def photo_jpeg(width: int = 4000, height: int = 3000, seed: int = SEED) -> bytes:
    """A photo-like JPEG: smooth colour gradients and soft blobs, plus mild sensor noise.

    Pure noise would make the JPEG codec's entropy coding dominate and flat colour would
    make it trivial; a real photo is in between, which is what this imitates.
    """
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    channels = []
    for channel in range(3):
        phase = rng.uniform(0, 2 * np.pi, size=4).astype(np.float32)
        plane = 120 + 60 * x * (channel + 1) / 3 + 50 * y
        plane = plane + 35 * np.sin(5 * x + phase[0]) * np.cos(3 * y + phase[1])
        plane = plane + 20 * np.sin(17 * x * y + phase[2]) + 10 * np.cos(29 * y + phase[3])
        channels.append(plane)
    image = np.stack(channels, axis=-1)
    image += rng.normal(0.0, 4.0, size=image.shape).astype(np.float32)
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    buffer = BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def pillow_grayscale(data: bytes) -> bytes:
    """What a user would write with Pillow: decode, convert to L, save as JPEG quality 90."""
    buffer = BytesIO()
    Image.open(BytesIO(data)).convert("L").save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def bench_grayscale(width: int = 4000, height: int = 3000, runs: int = 5) -> dict[str, Any]:
    """Time to_grayscale and plain Pillow on the same JPEG, interleaved, after a warm-up."""
    data = photo_jpeg(width, height)
    ours_out = to_grayscale(data)  # warm-up (and the output checked below)
    pillow_out = pillow_grayscale(data)
    ours: list[float] = []
    baseline: list[float] = []
    for index in range(runs):
        seconds, _ = _timed(lambda: to_grayscale(data))
        ours.append(seconds)
        seconds, _ = _timed(lambda: pillow_grayscale(data))
        baseline.append(seconds)
        progress(f"grayscale run {index + 1}/{runs}: ours {ours[-1]:.3f} s, Pillow {seconds:.3f} s")
    ours_img = Image.open(BytesIO(ours_out))
    pillow_img = Image.open(BytesIO(pillow_out))
    diff = np.abs(np.asarray(ours_img, dtype=np.int16) - np.asarray(pillow_img, dtype=np.int16))
    return {
        "width": width,
        "height": height,
        "input_bytes": len(data),
        "ours_s": ours,
        "baseline_s": baseline,
        "ours_median_s": median(ours),
        "baseline_median_s": median(baseline),
        "speedup": median(baseline) / median(ours),
        "ours_mode_size": [ours_img.mode, *ours_img.size],
        "pillow_mode_size": [pillow_img.mode, *pillow_img.size],
        "mean_abs_diff": float(diff.mean()),
        "max_abs_diff": int(diff.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="pure-function benchmarks")
    parser.add_argument("--bench", choices=("stats", "grayscale"), required=True)
    parser.add_argument("--quick", action="store_true", help="smaller inputs, fewer runs")
    args = parser.parse_args()
    if args.bench == "stats":
        emit(bench_stats(1_000_000, 1, 1) if args.quick else bench_stats())
    else:
        emit(bench_grayscale(runs=2) if args.quick else bench_grayscale())


if __name__ == "__main__":
    main()
