"""Summaries of timings, one definition for every benchmark so the tables agree."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["median", "p95", "summarize"]


def median(values: Sequence[float]) -> float:
    """The median: robust to the odd slow run a shared 2-core machine produces."""
    return float(statistics.median(values))


def p95(values: Sequence[float]) -> float:
    """The 95th percentile, interpolated between order statistics (numpy's 'linear' rule).

    With N=60 samples, the nearest-rank value would just be the 3rd slowest run; the
    inclusive interpolation is steadier and is the usual definition.
    """
    if len(values) < 2:
        return float(values[0])
    return float(statistics.quantiles(values, n=20, method="inclusive")[18])


def summarize(values: Sequence[float]) -> dict[str, float]:
    """p50, p95, mean, min and max of ``values``."""
    return {
        "p50": median(values),
        "p95": p95(values),
        "mean": float(statistics.fmean(values)),
        "min": float(min(values)),
        "max": float(max(values)),
    }
