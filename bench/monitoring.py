"""What monitoring costs in AWS requests: events, heartbeats, remote control, Flower.

Three local stacks in turn, each with one worker (``-c 2``): monitoring off
(``CLOUDWORKER_EVENTS=false``, ``CLOUDWORKER_REMOTE_CONTROL=false``), on, and on
with Flower receiving the events. For each, moto's access log counts every
request (SQS and SNS together: both are ``POST /``) while the stack idles and
while it answers a batch of ``compute_stats`` tasks; the differences to "off"
are what monitoring costs. Appends a section to ``bench/RESULTS.md`` (or prints
it with ``--print``).

    python -m bench.monitoring [--tasks 200] [--idle 60]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.requests import count_log_requests, log_offset
from config import Settings
from deploy import local
from tasks.application import create_app
from tasks.batching import batch_sends
from tasks.definitions import register

ROOT = Path(__file__).resolve().parent.parent
MODES = {
    "off": {"CLOUDWORKER_EVENTS": "false", "CLOUDWORKER_REMOTE_CONTROL": "false"},
    "on": {"CLOUDWORKER_EVENTS": "true", "CLOUDWORKER_REMOTE_CONTROL": "true"},
    "on, Flower receiving": {"CLOUDWORKER_EVENTS": "true", "CLOUDWORKER_REMOTE_CONTROL": "true"},
}


def measure(mode: str, tasks_n: int, idle_seconds: float) -> dict[str, float]:
    """Requests per idle hour and per task of a fresh stack in ``mode``."""
    saved = dict(os.environ)
    os.environ.update(MODES[mode])
    stack = local.Stack(Path(tempfile.mkdtemp(prefix="cloudworker-bench-monitoring-")))
    try:
        env = local.up(stack, workers=1, flower="Flower" in mode)
        os.environ.update(env)
        app = create_app(Settings.from_env(env))
        tasks = register(app)
        tasks.compute_stats.delay([1]).get(timeout=60)  # warm: queues, topics, subscriptions
        time.sleep(5)
        log = stack.log_file("moto")
        start, began = log_offset(log), time.monotonic()
        time.sleep(idle_seconds)
        idle = count_log_requests(log, start)["total"] / (time.monotonic() - began) * 3600
        start = log_offset(log)
        with batch_sends():
            results = [tasks.compute_stats.delay([i, i + 1]) for i in range(tasks_n)]
        for result in results:
            result.get(timeout=120)
        time.sleep(3)  # the last events reach the receivers
        per_task = count_log_requests(log, start)["total"] / tasks_n
        app.services.mailbox.close()
        return {"idle_per_hour": idle, "per_task": per_task}
    finally:
        local.down(stack)
        os.environ.clear()
        os.environ.update(saved)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.monitoring")
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle measured")
    parser.add_argument("--print", action="store_true", help="print instead of appending")
    args = parser.parse_args(argv)
    found: dict[str, Any] = {}
    for mode in MODES:
        print(f"monitoring {mode}: {args.idle:.0f} s idle, then {args.tasks} tasks", flush=True)
        found[mode] = measure(mode, args.tasks, args.idle)
    base = found["off"]
    rows = [
        f"| {mode} | {v['idle_per_hour']:.0f} | {v['idle_per_hour'] - base['idle_per_hour']:+.0f} "
        f"| {v['per_task']:.2f} | {v['per_task'] - base['per_task']:+.2f} |"
        for mode, v in found.items()
    ]
    section = "\n".join(
        [
            "",
            "## 6. What monitoring costs (`python -m bench.monitoring`)",
            "",
            f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; a fresh local stack per "
            f"row, one worker `-c 2`, heartbeat every {Settings().event_heartbeat:.0f} s; "
            f"requests counted in moto's access log (SQS and SNS together) over "
            f"{args.idle:.0f} s idle and over {args.tasks} `compute_stats` tasks sent in a batch.",
            "",
            "| monitoring | idle requests / worker-hour | vs off | requests / task | vs off |",
            "|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    print(section)
    if not args.print:
        with (ROOT / "bench" / "RESULTS.md").open("a") as results:
            results.write(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
