"""Round-trip latency of one ``compute_stats`` call (100 integers) with a warm client.

What is timed: from just before ``.delay()`` to ``.get()`` returning, for N sequential calls
after one untimed warm-up call (which pays for boto3 clients, queue URL lookups and, for
cloudworker, creating the response queue: costs a long-lived client pays once).

With ``--proxy SIDE=URL`` (the control URLs of the client's and the workers' proxies), the
requests of the N timed calls are counted too, by operation, so the requests each round trip
made can be set beside the critical path assumed for its floor.

Run in its own process (see :mod:`bench.client`)::

    python -m bench.roundtrip --system cloudworker --n 60
    python -m bench.roundtrip --system stock --n 60 [--interval 0.05]
"""

from __future__ import annotations

import argparse
import time

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
from bench.measure import summarize

__all__ = ["measure_latency"]


def measure_latency(
    system: str,
    n: int,
    interval: float | None,
    seed: int = 1,
    *,
    proxies: dict[str, str] | None = None,
    settle: float = 1.0,
) -> dict[str, object]:
    """Time ``n`` sequential round trips; return the per-call milliseconds and a summary."""
    proxies = proxies or {}
    client = make_client(system, interval)
    try:
        inputs = payloads(n + 1, seed)
        check_result(client.get(client.delay(inputs[0])), inputs[0])  # warm-up
        time.sleep(settle if proxies else 0)  # the warm-up's trailing requests
        before = proxy_counts(proxies)
        times_ms: list[float] = []
        for numbers in inputs[1:]:
            started = time.perf_counter()
            result = client.get(client.delay(numbers))
            times_ms.append((time.perf_counter() - started) * 1000)
            check_result(result, numbers)
        time.sleep(settle if proxies else 0)
        after = proxy_counts(proxies)
        progress(f"{system} (interval={interval}): p50 {summarize(times_ms)['p50']:.1f} ms")
        return {
            "system": system,
            "interval": interval,
            "n": n,
            "json_encoder": client.json_encoder,
            "times_ms": times_ms,
            "requests": {side: request_delta(before[side], after[side]) for side in proxies},
            **summarize(times_ms),
        }
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=SYSTEMS, required=True)
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--interval", type=float, default=None, help="stock .get() interval")
    parser.add_argument(
        "--proxy", action="append", default=[], metavar="SIDE=URL", help="a proxy's control URL"
    )
    args = parser.parse_args()
    emit(measure_latency(args.system, args.n, args.interval, proxies=parse_pairs(args.proxy)))


if __name__ == "__main__":
    main()
