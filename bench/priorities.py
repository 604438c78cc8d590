"""How long a priority-9 task waits behind a backlog, with priority lanes and without.

For each mode, a fresh local stack (ministack unless ``CLOUDWORKER_LOCAL_ENDPOINT`` says
otherwise), every request through a counting proxy: first a worker (``-c 2``) idles
for ``--idle`` seconds, its requests counted (what the lanes cost idle); then
``--backlog`` priority-0 tasks (10 ms each) are sent in batches, faster than the
worker runs them, and a priority-9 probe is sent every half second until the
backlog is done; each probe's wait (sent to answered) is noted. "lanes" sets Celery's
``task_queue_max_priority`` (cloudworker/sqs/priority_lanes.py); the baseline in the
same run does not (one queue, priorities ignored). Appends a section to
``bench/RESULTS.md`` (or prints it with ``--print``).

    python -m bench.priorities [--backlog 1000] [--idle 45]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from kombu import pools

from bench import stop_quickly, use_endpoint, write_section
from cloudworker.application import create_app
from cloudworker.settings import Settings
from cloudworker.sqs.batch_sends import batch_sends
from deploy import local
from tests.support.faultproxy import FaultProxy

ROOT = Path(__file__).resolve().parent.parent
MODES = {"lanes": "1", "one queue (baseline)": "0"}
QUEUE = "bench-priorities"


def measure(mode: str, backlog: int, idle_seconds: float) -> tuple[list[float], float]:
    """The probes' waits (s), and the idle worker's SQS requests per hour."""
    saved = dict(os.environ)
    os.environ["BENCH_PRIORITY_LANES"] = MODES[mode]
    os.environ["CLOUDWORKER_TASK_QUEUE"] = f"{QUEUE}-{MODES[mode]}"
    stack = local.Stack(Path(tempfile.mkdtemp(prefix="cloudworker-bench-priorities-")))
    try:
        env = local.up(stack, workers=0, flower=False)
        with FaultProxy(env["AWS_ENDPOINT_URL"]) as proxy:
            os.environ.update(env)
            os.environ["AWS_ENDPOINT_URL"] = proxy.url
            app = create_app(Settings.from_env(os.environ))
            app.conf.task_queue_max_priority = 10 if MODES[mode] == "1" else None
            worker_env = {**os.environ, "PYTHONPATH": str(ROOT)}
            command = local.worker_command("worker1", 2, "bench.priority_app")
            offset = local.log_size(stack, "worker1")
            local.start_process(stack, "worker1", command, worker_env)
            local.wait_for_log(stack, "worker1", offset, "ready.")
            time.sleep(5)  # its first receives made
            start, began = proxy.operation_counts(), time.monotonic()
            time.sleep(idle_seconds)
            hours = (time.monotonic() - began) / 3600
            idle = proxy.operation_counts() - start
            idle_sqs = sum(n for op, n in idle.items() if op.startswith("sqs:")) / hours
            # This client's response queue made (its first wait), as a client's long in use is.
            app.send_task("bench.nap", (0,)).get(timeout=120)
            with batch_sends():
                queued = [app.send_task("bench.nap", (0.01,), priority=0) for _ in range(backlog)]
            waits: list[float] = []
            while not queued[-1].ready():
                sent = time.monotonic()
                app.send_task("bench.nap", (0,), priority=9).get(timeout=600)
                waits.append(time.monotonic() - sent)
                time.sleep(0.5)
            for result in queued:
                result.get(timeout=600)
            app.services.mailbox.close()
            app.close()
        return waits, idle_sqs
    finally:
        pools.reset()  # type: ignore[no-untyped-call]  # kombu's producers: shared by URL
        stop_quickly(stack, ("worker1",))
        local.down(stack)
        os.environ.clear()
        os.environ.update(saved)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.priorities")
    parser.add_argument("--backlog", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=45.0, help="seconds of idle measured")
    parser.add_argument("--print", action="store_true", help="print instead of appending")
    args = parser.parse_args(argv)
    endpoint = use_endpoint()
    rows: list[str] = []
    found: dict[str, tuple[list[float], float]] = {}
    for mode in MODES:
        print(f"priorities, {mode}: {args.idle:.0f} s idle, then {args.backlog} tasks", flush=True)
        waits, idle_sqs = measure(mode, args.backlog, args.idle)
        found[mode] = (waits, idle_sqs)
    base_waits, base_idle = found["one queue (baseline)"]
    for mode, (waits, idle_sqs) in found.items():
        median = statistics.median(waits) if waits else float("nan")
        rows.append(
            f"| {mode} | {len(waits)} | {median:.2f} s | {max(waits):.2f} s "
            f"| {statistics.median(base_waits) / median:.1f}x | {idle_sqs:.0f} "
            f"({idle_sqs - base_idle:+.0f}) |"
        )
    section = "\n".join(
        [
            "",
            "## 10. Priorities: a priority-9 task behind a backlog (`python -m bench.priorities`)",
            "",
            f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {endpoint} (no "
            f"latency model), a fresh local stack per row, one worker `-c 2`. {args.backlog} "
            "priority-0 tasks of 10 ms sent in batches (faster than the worker runs them); "
            "then a priority-9 "
            "probe every 0.5 s until the backlog is done, each probe's wait from its send "
            "to its answer. Baseline: the same app without `task_queue_max_priority` (one "
            f"queue). Idle: SQS requests of the idle worker, {args.idle:.0f} s scaled to an "
            "hour (in brackets: the difference to the baseline).",
            "",
            "| mode | probes | median wait | longest wait | median vs baseline "
            "| SQS / worker-hour idle |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    write_section(section, print_only=args.print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
