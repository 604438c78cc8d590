"""Benchmarks of cloudworker against stock Celery on SQS + S3 (``python -m bench``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: The local endpoint the benchmarks run on unless CLOUDWORKER_LOCAL_ENDPOINT says otherwise:
#: ministack keeps its speed as a queue deepens, moto does not (deploy/endpoints.py).
DEFAULT_ENDPOINT = "ministack"
#: ministack's long-poll tick in the benchmarks, in seconds (bench/ministack_tick.py).
MINISTACK_TICK = os.environ.get("BENCH_MINISTACK_TICK", "0.005")


def use_endpoint(name: str | None = None) -> str:
    """Make ``deploy.local.up`` in this process start the benchmarks' endpoint; its name.

    ``name``, else ``CLOUDWORKER_LOCAL_ENDPOINT``, else :data:`DEFAULT_ENDPOINT`. ministack
    is started through ``bench/ministack-tick``, with a long-poll tick of
    :data:`MINISTACK_TICK` instead of 100 ms (why: ``bench/ministack_tick.py``).
    """
    chosen = name or os.environ.get("CLOUDWORKER_LOCAL_ENDPOINT") or DEFAULT_ENDPOINT
    os.environ["CLOUDWORKER_LOCAL_ENDPOINT"] = chosen
    if chosen == "ministack":
        os.environ["CLOUDWORKER_MINISTACK"] = str(
            Path(__file__).resolve().parent / "ministack-tick"
        )
        os.environ["BENCH_MINISTACK_TICK"] = MINISTACK_TICK
    return chosen


def stop_quickly(stack: Any, names: tuple[str, ...] = ("worker1", "flower", "exporter")) -> None:
    """Stop a finished benchmark stack's workers (and Flower, the exporter) within 3 s.

    Their figures are taken; a warm shutdown would only wait out an idle worker's long poll
    (about 20 s a stack), which ``make bench``'s 15 minutes cannot spare.
    ``deploy.local.down`` then stops the rest.
    """
    from deploy import local

    for name in names:
        local.stop_process(stack, name, grace=3.0)


def write_section(section: str, *, print_only: bool = False) -> None:
    """Print a report section and append it to ``bench/RESULTS.md`` (unless ``print_only``)."""
    print(section)
    if not print_only:
        with (Path(__file__).resolve().parent / "RESULTS.md").open("a") as results:
            results.write(section)
