"""``python -m bench`` (``make bench``): every benchmark in one run, then ``bench/RESULTS.md``.

Order, and why:

1. the pure-function benchmarks (``stats``, ``grayscale``) first, before any server or
   worker exists, so they have both cores to themselves;
2. one moto server for everything else, with cloudworker's worker and then the stock
   worker (never both: :class:`bench.stack.BenchStack`), each system's phases run by
   client subprocesses (:mod:`bench.client` explains why).

``--quick`` is a smoke run (small N, one repetition) and ``--only NAME`` runs one benchmark;
both write to ``bench/.work/RESULTS.md`` unless ``--output`` says otherwise, so a partial run
never overwrites the published figures. Logs of the last run stay in ``bench/.work/``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from bench import report
from bench.client import run_client
from bench.requests import idle_rate
from bench.stack import BenchStack

BENCH_DIR = Path(__file__).resolve().parent
WORK_DIR = BENCH_DIR / ".work"
BENCHMARKS = ("stats", "grayscale", "roundtrip", "throughput", "requests")
STACK_BENCHMARKS = ("roundtrip", "throughput", "requests")
#: The stock .get() interval reported for reference next to Celery's default (0.5 s).
FAST_INTERVAL = 0.05
CLIENT_TIMEOUT = 900.0


@dataclass(frozen=True)
class Plan:
    """How much of each benchmark to run."""

    latency_n: int
    throughput_n: int
    throughput_runs: int
    requests_n: int
    idle_seconds: float
    quick: bool


FULL = Plan(
    latency_n=60,
    throughput_n=500,
    throughput_runs=3,
    requests_n=100,
    idle_seconds=10.0,
    quick=False,
)
QUICK = Plan(
    latency_n=10, throughput_n=60, throughput_runs=1, requests_n=30, idle_seconds=3.0, quick=True
)


class Progress:
    """Timestamped progress lines, so a slow phase is visible while it runs."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] {message}", flush=True)


def run_compute(name: str, plan: Plan, log: Progress) -> dict[str, Any]:
    log(f"{name}: pure-function benchmark")
    args = ["--bench", name, *(["--quick"] if plan.quick else [])]
    result: dict[str, Any] = run_client("compute", args, dict(os.environ), CLIENT_TIMEOUT)
    log(f"{name}: {result['speedup']:.2f}x")
    return result


def run_stack_phases(selected: list[str], plan: Plan, log: Progress) -> dict[str, Any]:
    """The benchmarks that need moto and workers, one system after the other."""
    results: dict[str, Any] = {"roundtrip": {}, "throughput": {}, "requests": {}}
    stack = BenchStack(WORK_DIR)
    try:
        log(f"starting moto and cloudworker's worker in {WORK_DIR}")
        stack.up()
        for system in ("cloudworker", "stock"):
            log(f"{system}: switching to its worker")
            stack.use(system)
            log(f"{system}: worker ready, task queue empty")
            variants: list[float | None] = (
                [None] if system == "cloudworker" else [None, FAST_INTERVAL]
            )
            env = stack.process_env
            if "roundtrip" in selected:
                for interval in variants:
                    log(f"roundtrip: {system} {_label(interval)}, N={plan.latency_n}")
                    args = ["--system", system, "--n", str(plan.latency_n), *_interval(interval)]
                    results["roundtrip"][_key(system, interval)] = run_client(
                        "roundtrip", args, env, CLIENT_TIMEOUT
                    )
            if "throughput" in selected:
                for interval in variants:
                    runs = []
                    for index in range(plan.throughput_runs):
                        stack.drain(system)
                        log(
                            f"throughput: {system} {_label(interval)}, {plan.throughput_n} tasks, "
                            f"run {index + 1}/{plan.throughput_runs}"
                        )
                        args = ["--system", system, "--n", str(plan.throughput_n)]
                        for name, pgid in stack.process_groups(system).items():
                            args += ["--watch", f"{name}={pgid}"]
                        runs.append(
                            run_client(
                                "throughput", [*args, *_interval(interval)], env, CLIENT_TIMEOUT
                            )
                        )
                    results["throughput"][_key(system, interval)] = runs
            if "requests" in selected:
                stack.drain(system)
                log(
                    f"requests: idle rate of moto with {system}'s worker, {plan.idle_seconds:.0f} s"
                )
                idle = idle_rate(stack.moto_log, plan.idle_seconds)
                for interval in variants:
                    log(f"requests: {system} {_label(interval)}, {plan.requests_n} tasks")
                    args = ["--system", system, "--n", str(plan.requests_n), *_interval(interval)]
                    args += ["--moto-log", str(stack.moto_log)]
                    run = run_client("throughput", args, env, CLIENT_TIMEOUT)
                    run["idle_rate"] = idle
                    results["requests"][_key(system, interval)] = run
        results["logs"] = report.log_findings(
            {
                "cloudworker worker": stack.worker_log("cloudworker"),
                "stock worker": stack.worker_log("stock"),
            },
            stack.moto_log,
        )
    finally:
        stopped = stack.down()
        log(f"stopped {', '.join(stopped) or 'nothing'}")
    return results


def code_version() -> str:
    """The commit measured, and whether files outside bench/ differed from it."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=BENCH_DIR.parent, capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "not a git checkout"
    changed = [
        line
        for line in git("status", "--porcelain").splitlines()
        if line[3:] and not line[3:].startswith("bench/")
    ]
    if not changed:
        return f"commit `{commit}`, no uncommitted changes outside `bench/`"
    return f"commit `{commit}` plus uncommitted changes to {len(changed)} file(s) outside `bench/`"


def _key(system: str, interval: float | None) -> str:
    return system if interval is None else f"{system}@{interval}"


def _label(interval: float | None) -> str:
    return "default get()" if interval is None else f"get(interval={interval})"


def _interval(interval: float | None) -> list[str]:
    return [] if interval is None else ["--interval", str(interval)]


def _exit_on_sigterm(signum: int, frame: Any) -> NoReturn:
    # SystemExit unwinds through the finally blocks, which stop moto and the workers.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small N, one repetition")
    parser.add_argument("--only", choices=BENCHMARKS, action="append", help="run only this one")
    parser.add_argument("--output", type=Path, default=None, help="where to write the report")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)

    plan = QUICK if args.quick else FULL
    selected = list(args.only or BENCHMARKS)
    partial = plan.quick or args.only is not None
    output = args.output or (WORK_DIR / "RESULTS.md" if partial else BENCH_DIR / "RESULTS.md")
    log = Progress()
    context = {"load_before": os.getloadavg()[0], "code": code_version()}
    log(f"benchmarks: {', '.join(selected)}{' (quick)' if plan.quick else ''}")

    results: dict[str, Any] = {}
    for name in ("stats", "grayscale"):
        if name in selected:
            results[name] = run_compute(name, plan, log)
    if any(name in selected for name in STACK_BENCHMARKS):
        results.update(run_stack_phases(selected, plan, log))

    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    context = {**context, "load_after": os.getloadavg()[0]}
    text = report.render(
        results,
        plan=plan,
        selected=selected,
        argv=argv_text,
        seconds=time.monotonic() - log.started,
        context=context,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    WORK_DIR.mkdir(exist_ok=True)
    (WORK_DIR / "results.json").write_text(json.dumps(results, indent=1, default=str))
    log(f"wrote {output} (raw numbers in {WORK_DIR / 'results.json'})")
    print(report.summary_text(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
