"""Throughput: publish N ``compute_stats`` calls, then wait for each result in order.

tasks/s = N / (time from the first ``.delay()`` to the last result). One untimed warm-up
call comes first, as for latency, so client start-up is not charged to the run.

With ``--moto-log`` the run also counts AWS requests (the "requests per task" benchmark):
client-side calls by operation through botocore hooks installed before any client exists,
and every request moto answered in the window (see :mod:`bench.requests`). The window ends
``--settle`` seconds after the last result, so the worker's trailing requests (the ack after
the result is stored) fall inside it; the idle correction is applied by the orchestrator.

    python -m bench.throughput --system stock --n 500 [--interval 0.05] [--moto-log PATH]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench.client import SYSTEMS, check_result, emit, make_client, payloads, progress
from bench.cpu import snapshot
from bench.requests import count_log_requests, install_client_counter, log_offset

__all__ = ["measure_throughput"]


def measure_throughput(
    system: str,
    n: int,
    interval: float | None,
    *,
    moto_log: Path | None = None,
    settle: float = 2.0,
    watch: dict[str, int] | None = None,
    seed: int = 2,
) -> dict[str, Any]:
    """Publish ``n`` tasks, collect their results; optionally count the requests it took.

    ``watch`` names process groups (moto, the worker) whose CPU seconds during the timed
    window are reported, with this client's own, to show which process bounds the run.
    """
    watch = watch or {}
    counter = install_client_counter() if moto_log is not None else None
    client = make_client(system, interval)
    try:
        inputs = payloads(n + 1, seed)
        check_result(client.get(client.delay(inputs[0])), inputs[0])  # warm-up
        if counter is not None:
            counter.reset()
        start_offset = log_offset(moto_log) if moto_log is not None else 0

        cpu_before = {**snapshot(watch), "client": time.process_time()}
        started = time.perf_counter()
        pending = [client.delay(numbers) for numbers in inputs[1:]]
        published = time.perf_counter()
        for result, numbers in zip(pending, inputs[1:], strict=True):
            check_result(client.get(result), numbers)
        finished = time.perf_counter()
        cpu_after = {**snapshot(watch), "client": time.process_time()}

        report: dict[str, Any] = {
            "system": system,
            "interval": interval,
            "n": n,
            "json_encoder": client.json_encoder,
            "seconds": finished - started,
            "publish_seconds": published - started,
            "tasks_per_s": n / (finished - started),
            "cpu_seconds": {name: cpu_after[name] - cpu_before[name] for name in cpu_before},
        }
        if counter is not None and moto_log is not None:
            time.sleep(settle)
            report["client"] = counter.snapshot()
            report["server_requests"] = count_log_requests(moto_log, start_offset)
            report["window_seconds"] = time.perf_counter() - started
        progress(f"{system} (interval={interval}): {report['tasks_per_s']:.1f} tasks/s")
        return report
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=SYSTEMS, required=True)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--interval", type=float, default=None, help="stock .get() interval")
    parser.add_argument("--moto-log", type=Path, default=None, help="count requests in this log")
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument(
        "--watch", action="append", default=[], metavar="NAME=PGID", help="report its CPU"
    )
    args = parser.parse_args()
    watch = {name: int(pgid) for name, _, pgid in (item.partition("=") for item in args.watch)}
    emit(
        measure_throughput(
            args.system,
            args.n,
            args.interval,
            moto_log=args.moto_log,
            settle=args.settle,
            watch=watch,
        )
    )


if __name__ == "__main__":
    main()
