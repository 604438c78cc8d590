"""What monitoring costs in AWS requests: events, heartbeats, remote control, Flower.

Three local stacks in turn, each with one worker (``-c 2``): monitoring off
(``CLOUDWORKER_EVENTS=false``, ``CLOUDWORKER_REMOTE_CONTROL=false``), on, and on
with Flower receiving the events. Every process of the stack (worker, Flower,
this client) talks to the endpoint (ministack unless ``CLOUDWORKER_LOCAL_ENDPOINT`` says
otherwise) through a counting proxy (:mod:`tests.support.faultproxy`,
with no fault set), which tells SQS from SNS requests and names each
operation. Requests are counted while the stack idles and while it answers a
batch of ``compute_stats`` tasks; the differences to "off" are what monitoring
costs. Appends a section to ``bench/RESULTS.md`` (or prints it with ``--print``).

    python -m bench.monitoring [--tasks 200] [--idle 120]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench import stop_quickly, use_endpoint, write_section
from cloudworker.application import create_app
from cloudworker.settings import Settings
from cloudworker.sqs.batch_sends import batch_sends
from deploy import local
from tasks.definitions import register
from tests.support.faultproxy import FaultProxy

MODES = {
    "off": {"CLOUDWORKER_EVENTS": "false", "CLOUDWORKER_REMOTE_CONTROL": "false"},
    "on": {"CLOUDWORKER_EVENTS": "true", "CLOUDWORKER_REMOTE_CONTROL": "true"},
    "on, Flower receiving": {"CLOUDWORKER_EVENTS": "true", "CLOUDWORKER_REMOTE_CONTROL": "true"},
    # The metrics exporter (deploy/exporter.py) receiving, reading SQS and S3 every 30 s,
    # and clients sending task-sent events (CLOUDWORKER_SENT_EVENTS) for its sent count.
    "on, exporter receiving, task-sent": {
        "CLOUDWORKER_EVENTS": "true",
        "CLOUDWORKER_REMOTE_CONTROL": "true",
        "CLOUDWORKER_SENT_EVENTS": "true",
    },
}


@dataclass
class Measured:
    idle_per_hour: Counter[str]  # requests per worker-hour, by service:Operation
    per_task: dict[str, float]  # requests per task, by service:Operation

    def idle(self, service: str) -> float:
        return sum(n for op, n in self.idle_per_hour.items() if op.startswith(service + ":"))

    def task(self, service: str) -> float:
        return sum(n for op, n in self.per_task.items() if op.startswith(service + ":"))


def measure(mode: str, tasks_n: int, idle_seconds: float) -> Measured:
    """Requests per idle worker-hour and per task of a fresh stack in ``mode``."""
    saved = dict(os.environ)
    os.environ.update(MODES[mode])
    stack = local.Stack(Path(tempfile.mkdtemp(prefix="cloudworker-bench-monitoring-")))
    try:
        env = local.up(stack, workers=0, flower=False)  # the endpoint, provisioned
        with FaultProxy(env["AWS_ENDPOINT_URL"]) as proxy:
            env = local.up(stack, workers=1, flower="Flower" in mode, endpoint=proxy.url)
            os.environ.update(env)
            os.environ["AWS_ENDPOINT_URL"] = proxy.url
            if "exporter" in mode:
                start_exporter(stack, env)
            app = create_app(Settings.from_env(os.environ))
            tasks = register(app)
            tasks.compute_stats.delay([1]).get(timeout=60)  # warm: queues, topics, subscriptions
            time.sleep(5)
            start, began = proxy.operation_counts(), time.monotonic()
            time.sleep(idle_seconds)
            hours = (time.monotonic() - began) / 3600
            idle = proxy.operation_counts() - start
            start = proxy.operation_counts()
            with batch_sends():
                results = [tasks.compute_stats.delay([i, i + 1]) for i in range(tasks_n)]
            for result in results:
                result.get(timeout=120)
            time.sleep(3)  # the last events reach the receivers
            busy = proxy.operation_counts() - start
            app.services.mailbox.close()
        return Measured(
            Counter({op: round(n / hours) for op, n in idle.items()}),
            {op: n / tasks_n for op, n in busy.items()},
        )
    finally:
        local.stop_process(stack, "exporter")
        stop_quickly(stack)
        local.down(stack)
        os.environ.clear()
        os.environ.update(saved)


def start_exporter(stack: local.Stack, env: dict[str, str]) -> None:
    """``python -m deploy.exporter`` on the stack, through the proxy; back once it receives."""
    before = local._event_receivers(env)
    port = local._free_port()
    command = [sys.executable, "-m", "deploy.exporter", "--port", str(port)]
    local.start_process(stack, "exporter", command, dict(os.environ))
    deadline = time.monotonic() + 60
    while not local._event_receivers(env) - before:
        if time.monotonic() > deadline:
            raise RuntimeError("the exporter did not subscribe to the events")
        time.sleep(0.5)
    # Scraped every 15 s, as Prometheus would: its SQS and S3 reads happen at scrapes.
    threading.Thread(target=_scrape, args=(stack, port), daemon=True).start()


def _scrape(stack: local.Stack, port: int) -> None:
    while stack.pid("exporter") is not None:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        time.sleep(15)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.monitoring")
    parser.add_argument("--tasks", type=int, default=200)
    # 45 s (so that `make bench` fits in 15 minutes): one or two heartbeats (30 s) and two or
    # three long polls (20 s) of each poller per window; scaled to an hour, so coarse.
    parser.add_argument("--idle", type=float, default=45.0, help="seconds of idle measured")
    parser.add_argument("--print", action="store_true", help="print instead of appending")
    parser.add_argument("--only", choices=list(MODES), help="measure one setting and print it")
    args = parser.parse_args(argv)
    endpoint = use_endpoint()
    if args.only:
        measured = measure(args.only, args.tasks, args.idle)
        for op in sorted(set(measured.idle_per_hour) | set(measured.per_task)):
            per_task = measured.per_task.get(op, 0)
            print(f"{op}: {measured.idle_per_hour.get(op, 0)} / hour idle, {per_task:.2f} / task")
        return 0
    found: dict[str, Measured] = {}
    for mode in MODES:
        print(f"monitoring {mode}: {args.idle:.0f} s idle, then {args.tasks} tasks", flush=True)
        found[mode] = measure(mode, args.tasks, args.idle)
    base = found["off"]
    rows = []
    for mode, m in found.items():
        cells = [
            f"{m.idle('sqs'):.0f} ({m.idle('sqs') - base.idle('sqs'):+.0f})",
            f"{m.idle('sns'):.0f} ({m.idle('sns') - base.idle('sns'):+.0f})",
            f"{m.task('sqs'):.2f} ({m.task('sqs') - base.task('sqs'):+.2f})",
            f"{m.task('sns'):.2f} ({m.task('sns') - base.task('sns'):+.2f})",
        ]
        rows.append(f"| {mode} | " + " | ".join(cells) + " |")
    on, flower = found["on"], found["on, Flower receiving"]
    detail = [
        f"| {op} | {on.idle_per_hour.get(op, 0)} | {flower.idle_per_hour.get(op, 0)} "
        f"| {on.per_task.get(op, 0):.2f} | {flower.per_task.get(op, 0):.2f} |"
        for op in sorted(set(on.idle_per_hour) | set(flower.idle_per_hour) | set(on.per_task)
                         | set(flower.per_task))
        if op.startswith(("sqs:", "sns:"))
    ]  # fmt: skip
    section = "\n".join(
        [
            "",
            "## 9. What monitoring costs (`python -m bench.monitoring`)",
            "",
            f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; a fresh local stack per "
            f"row, one worker `-c 2`, heartbeat every {Settings().event_heartbeat:.0f} s, long "
            f"polls of {Settings().wait_seconds} s. Every request of the worker, Flower and the "
            f"client counted by operation at a proxy in front of "
            f"{endpoint} (no latency model), over {args.idle:.0f} s "
            f"idle (scaled to an hour) and over {args.tasks} `compute_stats` tasks sent in a "
            "batch. In brackets: the difference to monitoring off.",
            "",
            "| monitoring | SQS / worker-hour idle | SNS / worker-hour idle "
            "| SQS / task | SNS / task |",
            "|---|---|---|---|---|",
            *rows,
            "",
            "By operation, monitoring on (without and with Flower):",
            "",
            "| operation | idle / hour | with Flower | per task | with Flower |",
            "|---|---|---|---|---|",
            *detail,
            "",
        ]
    )
    write_section(section, print_only=args.print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
