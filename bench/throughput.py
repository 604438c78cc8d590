"""Steady-state throughput: N ``compute_stats`` calls with a bounded number in flight.

The client keeps ``--inflight`` tasks outstanding, shared by ``--threads`` threads: each
sends its share, then waits for its oldest result and sends its next task as each result
comes back, until N results are in.
So the task queue never holds more than ``--inflight`` messages and the endpoint works at a
small queue depth, as a steady stream of work would keep it (a run that queues everything
first measures how the endpoint copes with a deep queue instead).

What is reported:

* tasks/s over the steady part of the run: from the ``inflight``-th result to the
  ``(N - inflight)``-th, so the fill at the start and the drain at the end are left out;
* CPU per task over the whole run (first send to last result): this client's own
  (``time.process_time``, all its threads) and each watched process group's (``--watch``:
  the endpoint, the worker with its pool, the two proxies; from ``/proc``, :mod:`bench.cpu`);
* AWS requests over the whole run, by operation, as the proxies counted them (``--proxy``:
  the client's and the workers'), read again ``--settle`` seconds after the last result so
  the worker's trailing requests (the acknowledgement after the result is stored) are in.

One untimed warm-up call comes first, so client start-up is not charged to the run.

    python -m bench.throughput --system cloudworker --n 600 --inflight 50 \\
        --watch worker=PGID --proxy client=http://127.0.0.1:C1 --proxy worker=...
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import Counter, deque
from typing import Any

from bench.client import (
    SYSTEMS,
    check_result,
    emit,
    make_client,
    parse_pairs,
    payloads,
    progress,
    proxy_counts,
    request_delta,
)
from bench.cpu import snapshot

__all__ = ["THREADS", "measure_throughput"]

#: Client threads, each keeping its share of the tasks in flight. One thread sending a
#: task at a time (a SendMessage, 10 ms under the aws model) and waiting its results in
#: order capped cloudworker at about 46 tasks/s whatever the worker's concurrency: the
#: bench's client, not the system, was measured. Both systems get the same threads.
THREADS = 6


def measure_throughput(
    system: str,
    n: int,
    inflight: int,
    interval: float | None = None,
    *,
    settle: float = 1.0,
    watch: dict[str, int] | None = None,
    proxies: dict[str, str] | None = None,
    seed: int = 2,
    threads: int = THREADS,
) -> dict[str, Any]:
    """Run ``n`` tasks keeping ``inflight`` outstanding; rate, CPU and requests per task."""
    watch, proxies = watch or {}, proxies or {}
    inflight = max(1, min(inflight, n))
    client = make_client(system, interval)
    try:
        inputs = payloads(n + 1, seed)
        check_result(client.get(client.delay(inputs[0])), inputs[0])  # warm-up
        steady_from, steady_to = inflight, max(inflight + 1, n - inflight)
        threads = max(1, min(threads, inflight))

        counts_before = proxy_counts(proxies)
        cpu_before = {**snapshot(watch), "client": time.process_time()}
        started = time.perf_counter()
        done_at = _run_threads(client, inputs[1:], inflight, threads)
        finished = time.perf_counter()
        cpu_after = {**snapshot(watch), "client": time.process_time()}
        time.sleep(settle)
        counts_after = proxy_counts(proxies)

        marks = {steady_from: done_at[steady_from - 1], steady_to: done_at[steady_to - 1]}
        steady_seconds = marks[steady_to] - marks[steady_from]
        report: dict[str, Any] = {
            "system": system,
            "interval": interval,
            "n": n,
            "inflight": inflight,
            "threads": threads,
            "json_encoder": client.json_encoder,
            "seconds": finished - started,
            "tasks_per_s_overall": n / (finished - started),
            "steady_tasks": steady_to - steady_from,
            "steady_seconds": steady_seconds,
            "tasks_per_s": (steady_to - steady_from) / steady_seconds,
            "cpu_seconds": {name: cpu_after[name] - cpu_before[name] for name in cpu_before},
            "requests": {
                side: dict(request_delta(counts_before[side], counts_after[side]))
                for side in proxies
            },
        }
        total: Counter[str] = Counter()
        for by_operation in report["requests"].values():
            total.update(by_operation)
        progress(
            f"{system} (inflight={inflight}): {report['tasks_per_s']:.1f} tasks/s steady, "
            f"{sum(total.values()) / n:.2f} requests/task"
        )
        return report
    finally:
        client.close()


def _run_threads(client: Any, inputs: list[list[int]], inflight: int, threads: int) -> list[float]:
    """Run every input on ``threads`` threads sharing ``inflight``; when each result came."""
    lock = threading.Lock()
    done_at: list[float] = []
    failures: list[BaseException] = []

    def run(share: list[list[int]], window: int) -> None:
        try:
            todo = iter(share)
            pending: deque[tuple[Any, list[int]]] = deque()
            for numbers in todo:
                pending.append((client.delay(numbers), numbers))
                if len(pending) >= window:
                    break
            while pending:
                result, numbers = pending.popleft()
                check_result(client.get(result), numbers)
                with lock:
                    done_at.append(time.perf_counter())
                following = next(todo, None)
                if following is not None:
                    pending.append((client.delay(following), following))
        except BaseException as exc:  # raised again by the caller, from the main thread
            failures.append(exc)

    workers = [
        threading.Thread(
            target=run,
            args=(inputs[i::threads], inflight // threads + (i < inflight % threads)),
            name=f"bench-client-{i}",
        )
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if failures:
        raise failures[0]
    return sorted(done_at)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=SYSTEMS, required=True)
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--inflight", type=int, default=50)
    parser.add_argument("--interval", type=float, default=None, help="stock .get() interval")
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument(
        "--threads", type=int, default=THREADS, help="client threads sharing the in-flight tasks"
    )
    parser.add_argument(
        "--watch", action="append", default=[], metavar="NAME=PGID", help="report its CPU"
    )
    parser.add_argument(
        "--proxy", action="append", default=[], metavar="SIDE=URL", help="a proxy's control URL"
    )
    args = parser.parse_args()
    emit(
        measure_throughput(
            args.system,
            args.n,
            args.inflight,
            args.interval,
            settle=args.settle,
            watch={name: int(pgid) for name, pgid in parse_pairs(args.watch).items()},
            proxies=parse_pairs(args.proxy),
            threads=args.threads,
        )
    )


if __name__ == "__main__":
    main()
