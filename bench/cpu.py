"""CPU time of process groups, read from ``/proc``, to show what bounds a run.

Why: on one machine with a single-process moto, a throughput figure means little unless it
says who was busy. If moto uses most of a core while the worker and client idle, the run
measures moto's cost per request, not the system under test. Every process the benchmark
starts (moto, each worker with its pool) leads its own session, so its process group id is
its pid and the group's CPU is the sum over the processes in it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["group_cpu_seconds", "snapshot"]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes in process group ``pgid``."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        # After the command: state, ppid, pgrp, ..., utime (11th), stime (12th).
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def snapshot(groups: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process group."""
    return {name: group_cpu_seconds(pgid) for name, pgid in groups.items()}
