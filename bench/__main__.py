"""``python -m bench`` (``make bench``): every benchmark in one run, then ``bench/RESULTS.md``.

Order, and why:

1. the pure-function benchmarks (``stats``, ``grayscale``) first, before any server or
   worker exists, so they have both cores to themselves;
2. one local endpoint (ministack unless ``--endpoint moto``) with two counting proxies in
   front of it, the workers' and the clients' (:class:`bench.stack.BenchStack`); then one
   worker at a time, for each system and pool size, and with that worker every phase twice:
   once with the proxies adding no latency (``none``) and once with the in-region AWS model
   (``aws``, :mod:`bench.latency`). Each phase's client is a subprocess of its own
   (:mod:`bench.client` explains why).

``--quick`` is a smoke run (small N, one pool size) and ``--only NAME`` runs one benchmark;
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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from bench import DEFAULT_ENDPOINT, MINISTACK_TICK, report
from bench.client import run_client
from bench.report import PINGPONG
from bench.stack import MONITORING_OFF, BenchStack, Worker

BENCH_DIR = Path(__file__).resolve().parent
WORK_DIR = BENCH_DIR / ".work"
BENCHMARKS = ("stats", "grayscale", "roundtrip", "throughput", "endtoend")
STACK_BENCHMARKS = ("roundtrip", "throughput", "endtoend")
PROFILES = ("none", "aws")
#: The stock .get() interval reported for reference next to Celery's default (0.5 s).
FAST_INTERVAL = 0.05
#: The pool size of the round trip and end-to-end phases (the local stack's default).
ROUNDTRIP_CONCURRENCY = 2
CLIENT_TIMEOUT = 900.0


@dataclass(frozen=True)
class Plan:
    """How much of each benchmark to run."""

    latency_n: int
    throughput_n: int
    inflight: int
    concurrencies: tuple[int, ...]
    endtoend_n: int
    quick: bool


#: Sized so that `make bench` (this, then bench.payloads and bench.monitoring) stays under
#: 15 minutes on the 2-core machine: stock's round trips cost 0.5 s each (its polling
#: interval) and its throughput at -c 1 under the aws model is about 10 tasks/s.
FULL = Plan(
    latency_n=30,
    throughput_n=300,
    inflight=30,
    concurrencies=(1, 2, 4),
    endtoend_n=3,
    quick=False,
)
QUICK = Plan(
    latency_n=8, throughput_n=100, inflight=20, concurrencies=(2,), endtoend_n=1, quick=True
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


def workers(plan: Plan) -> list[Worker]:
    """Every worker measured, cloudworker's first; the round-trip pool size first of each."""
    sizes = sorted(plan.concurrencies, key=lambda c: c != ROUNDTRIP_CONCURRENCY)
    found = [Worker("cloudworker", sizes[0]), Worker("cloudworker", sizes[0], MONITORING_OFF)]
    found += [Worker("cloudworker", c) for c in sizes[1:]]
    found += [Worker("stock", c) for c in sizes]
    return found


def run_stack_phases(
    selected: list[str], plan: Plan, endpoint: str, log: Progress
) -> dict[str, Any]:
    """The benchmarks that need the endpoint and workers, one worker after the other.

    A phase that fails is logged and listed under ``failures`` (shown in the report); the
    others go on, so one failure does not cost the whole run.
    """
    results: dict[str, Any] = {
        "roundtrip": {profile: {} for profile in PROFILES},
        "throughput": {profile: {} for profile in PROFILES},
        "endtoend": {},
        "failures": [],
    }

    def phase(label: str, module: str, args: list[str], env: dict[str, str]) -> Any:
        try:
            return run_client(module, args, env, CLIENT_TIMEOUT)
        except Exception as error:  # recorded; the run goes on
            log(f"{label}: FAILED: {error}")
            results["failures"].append(f"{label}: {str(error)[-600:]}")
            return None

    stack = BenchStack(WORK_DIR, endpoint)
    try:
        log(f"starting {endpoint} and the two proxies in {WORK_DIR}")
        stack.up()
        controls = stack.proxy_controls()
        proxy_args = [arg for side, url in controls.items() for arg in ("--proxy", f"{side}={url}")]
        _run_pingpong(stack, plan, phase, log=log, into=results["roundtrip"], selected=selected)
        for worker in workers(plan):
            log(f"{worker.label}: switching to its worker")
            try:
                stack.use(worker)
            except Exception as error:  # recorded; the run goes on
                log(f"{worker.label}: FAILED to start: {error}")
                results["failures"].append(f"{worker.label}: worker: {str(error)[-600:]}")
                continue
            log(f"{worker.label}: worker ready, task queue empty")
            env = stack.process_env
            key = worker.key
            for profile in PROFILES:
                stack.set_latency(profile)
                if "roundtrip" in selected and worker.concurrency == ROUNDTRIP_CONCURRENCY:
                    variants: list[float | None] = (
                        [None] if worker.system == "cloudworker" else [None, FAST_INTERVAL]
                    )
                    for interval in variants:
                        name = key + ("" if interval is None else f"@{interval}")
                        label = f"roundtrip [{profile}]: {name}"
                        log(f"{label}, N={plan.latency_n}")
                        args = ["--system", worker.system, "--n", str(plan.latency_n)]
                        args += [*_interval(interval), *proxy_args]
                        stack.drain()
                        found = phase(label, "roundtrip", args, env)
                        if found is not None:
                            results["roundtrip"][profile][name] = found
                if "throughput" in selected:
                    stack.drain()
                    label = f"throughput [{profile}]: {key}"
                    log(f"{label}, {plan.throughput_n} tasks, {plan.inflight} in flight")
                    args = ["--system", worker.system, "--n", str(plan.throughput_n)]
                    args += ["--inflight", str(plan.inflight), *proxy_args]
                    for name, pgid in stack.process_groups().items():
                        args += ["--watch", f"{name}={pgid}"]
                    found = phase(label, "throughput", args, env)
                    if found is not None:
                        results["throughput"][profile][key] = found
                if "endtoend" in selected and worker == Worker(
                    "cloudworker", ROUNDTRIP_CONCURRENCY
                ):
                    stack.drain()
                    label = f"endtoend [{profile}]"
                    log(f"{label}: compute_stats 1M ints, grayscale 12 MP, N={plan.endtoend_n}")
                    args = ["--n", str(plan.endtoend_n), *proxy_args]
                    found = phase(label, "endtoend", args, env)
                    if found is not None:
                        results["endtoend"][profile] = found
            stack.set_latency("none")
        results["logs"] = report.log_findings(stack.worker_logs(), stack.endpoint_log)
    finally:
        stopped = stack.down()
        log(f"stopped {', '.join(stopped) or 'nothing'}")
    return results


def _run_pingpong(
    stack: BenchStack,
    plan: Plan,
    phase: Callable[[str, str, list[str], dict[str, str]], Any],
    *,
    log: Progress,
    into: dict[str, Any],
    selected: list[str],
) -> None:
    """The floor's four requests with plain boto3, per latency profile (bench/pingpong.py)."""
    if "roundtrip" not in selected:
        return
    assert stack.worker_proxy is not None
    for profile in PROFILES:
        stack.set_latency(profile)
        label = f"pingpong [{profile}]"
        log(f"{label}: the floor's four SQS requests with plain boto3, N={plan.latency_n}")
        args = ["--n", str(plan.latency_n), "--responder-endpoint", stack.worker_proxy.url]
        found = phase(label, "pingpong", args, stack.process_env)
        if found is not None:
            into[profile][PINGPONG] = found
    stack.set_latency("none")


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
    parser.add_argument(
        "--endpoint",
        choices=("ministack", "moto"),
        default=os.environ.get("CLOUDWORKER_LOCAL_ENDPOINT") or DEFAULT_ENDPOINT,
        help="the local AWS endpoint (default: ministack, or CLOUDWORKER_LOCAL_ENDPOINT)",
    )
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="RESULTS_JSON",
        help="only write the report again from a run's raw numbers (bench/.work/results.json)",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if args.render is not None:
        return rerender(args.render, args.output)

    plan = QUICK if args.quick else FULL
    selected = list(args.only or BENCHMARKS)
    partial = plan.quick or args.only is not None
    output = args.output or (WORK_DIR / "RESULTS.md" if partial else BENCH_DIR / "RESULTS.md")
    log = Progress()
    context = {
        "load_before": os.getloadavg()[0],
        "code": code_version(),
        "endpoint": args.endpoint,
        "ministack_tick": MINISTACK_TICK,
    }
    log(f"benchmarks: {', '.join(selected)}{' (quick)' if plan.quick else ''}")

    results: dict[str, Any] = {}
    for name in ("stats", "grayscale"):
        if name in selected:
            results[name] = run_compute(name, plan, log)
    if any(name in selected for name in STACK_BENCHMARKS):
        results.update(run_stack_phases(selected, plan, args.endpoint, log))

    results["run"] = {
        "argv": " ".join(sys.argv[1:] if argv is None else argv),
        "selected": selected,
        "plan": asdict(plan),
        "seconds": time.monotonic() - log.started,
        "context": {**context, "load_after": os.getloadavg()[0]},
        "finished": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    }
    WORK_DIR.mkdir(exist_ok=True)
    raw = WORK_DIR / "results.json"
    raw.write_text(json.dumps(results, indent=1, default=str))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report.render(results))
    log(f"wrote {output} (raw numbers in {raw})")
    print(report.summary_text(results), flush=True)
    return 0


def rerender(raw: Path, output: Path | None) -> int:
    """Write the report of a finished run again, from its raw numbers."""
    results = json.loads(raw.read_text())
    run = results["run"]
    partial = run["plan"]["quick"] or set(run["selected"]) != set(BENCHMARKS)
    output = output or (WORK_DIR / "RESULTS.md" if partial else BENCH_DIR / "RESULTS.md")
    output.write_text(report.render(results))
    print(f"wrote {output}")
    print(report.summary_text(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
