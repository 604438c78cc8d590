"""The client side of one system, built in its own process, plus what client runs share.

Why one process per client: cloudworker's ``create_app`` re-registers kombu's ``json``
serializer for the whole process, so a stock client living next to it would silently use
cloudworker's codec. Every client run is therefore a fresh ``python -m bench.<module>``
process that builds exactly one system's client and prints its results as one JSON line
(:func:`emit`), which the orchestrator reads back (:func:`run_client`).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "SYSTEMS",
    "Client",
    "emit",
    "make_client",
    "parse_pairs",
    "payloads",
    "proxy_counts",
    "request_delta",
    "run_client",
]

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("cloudworker", "stock")
#: Each compute_stats call gets this many integers.
LIST_SIZE = 100
#: Longest wait for one result; far above any round trip, it only catches a dead worker.
GET_TIMEOUT = 60.0


@dataclass
class Client:
    """One system's ``compute_stats`` task, how to wait for a result, and its codec."""

    system: str
    delay: Callable[[list[int]], Any]
    get: Callable[[Any], Any]
    json_encoder: str
    close: Callable[[], None]


def make_client(system: str, interval: float | None = None) -> Client:
    """Build ``system``'s client in this process from the stack's environment.

    ``interval`` is the stock ``.get()`` polling interval; ``None`` means Celery's
    default (0.5 s) by not passing it at all, exactly as a user would call ``.get()``.
    cloudworker ignores it: its ``.get()`` long-polls the response queue.
    """
    from kombu import serialization

    if system == "stock":
        from bench.stock_app import compute_stats

        def stock_get(result: Any) -> Any:
            if interval is None:
                return result.get(timeout=GET_TIMEOUT)
            return result.get(timeout=GET_TIMEOUT, interval=interval)

        return Client(system, compute_stats.delay, stock_get, _encoder(serialization), _noop)
    if system == "cloudworker":
        from cloudworker.application import create_app
        from cloudworker.settings import Settings
        from tasks.definitions import register

        app = create_app(Settings.from_env(os.environ))
        task = register(app).compute_stats
        return Client(
            system,
            task.delay,
            lambda result: result.get(timeout=GET_TIMEOUT),
            _encoder(serialization),
            app.services.mailbox.close,
        )
    raise ValueError(f"unknown system {system!r}; expected one of {SYSTEMS}")


def _encoder(serialization: Any) -> str:
    encoder = serialization.registry._encoders["json"].encoder
    return f"{encoder.__module__}.{encoder.__qualname__}"


def _noop() -> None:
    return None


def payloads(count: int, seed: int) -> list[list[int]]:
    """``count`` lists of 100 random integers: the same inputs for both systems."""
    rng = random.Random(seed)
    return [[rng.randrange(-(10**9), 10**9) for _ in range(LIST_SIZE)] for _ in range(count)]


def check_result(result: Any, numbers: list[int]) -> None:
    """Fail loudly if a system returned something other than the statistics asked for."""
    if not isinstance(result, Mapping) or result.get("count") != len(numbers):
        raise AssertionError(f"unexpected result {result!r:.200}")
    if result.get("min") != min(numbers) or result.get("max") != max(numbers):
        raise AssertionError(f"wrong statistics {result!r:.200}")


def parse_pairs(items: list[str]) -> dict[str, str]:
    """``["a=1", "b=2"]`` (repeated ``--watch``/``--proxy`` options) as a dict."""
    pairs = {}
    for item in items:
        name, _, value = item.partition("=")
        pairs[name] = value
    return pairs


def proxy_counts(controls: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """Each proxy's request counts so far, by operation (``side -> {operation: n}``)."""
    from bench.proxy import counts_at

    return {side: dict(counts_at(url)["operations"]) for side, url in controls.items()}


def request_delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """The requests counted between two snapshots, by operation (zeros left out)."""
    delta = {op: after.get(op, 0) - before.get(op, 0) for op in after}
    return {op: n for op, n in sorted(delta.items()) if n}


def emit(result: Mapping[str, Any]) -> None:
    """Print the run's result as the last line of stdout (progress goes to stderr)."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def progress(message: str) -> None:
    """A progress line from a client process, shown by the orchestrator as it runs."""
    sys.stderr.write(f"    {message}\n")
    sys.stderr.flush()


def run_client(module: str, args: list[str], env: Mapping[str, str], timeout: float) -> Any:
    """Run ``python -m bench.<module> ARGS`` with the stack's env; return its JSON line."""
    completed = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=None,  # progress and warnings go straight to the terminal
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        raise RuntimeError(
            f"bench.{module} {' '.join(args)} failed (exit {completed.returncode}): "
            f"{completed.stdout[-2000:]}"
        )
    return json.loads(lines[-1])
