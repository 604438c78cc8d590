"""``RESULTS.md``: the run's conditions, one table per benchmark, and what looked odd.

Every table states its baseline, the ratio to it, the target and whether it is met, so the
file can be read without the code. Numbers come from moto on loopback: they compare the
two systems on the same endpoint; they do not say what AWS would do.
"""

from __future__ import annotations

import os
import platform
import re
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.measure import median

__all__ = ["log_findings", "render", "summary_text"]

LATENCY_TARGET = 5.0
THROUGHPUT_TARGET = 1.5
STATS_TARGET = 10.0
GRAYSCALE_TARGET = 1.7
PACKAGES = ("celery", "kombu", "moto", "boto3", "botocore", "numpy", "pillow")
STOCK_FAST = "stock@0.05"

_STATUS = re.compile(rb'" (\d{3}) ')
_PROBLEM = re.compile(r"\b(ERROR|CRITICAL|Traceback|Exception)\b")


def _met(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def _ms(value: float) -> str:
    return f"{value:.1f}"


def _x(value: float) -> str:
    return f"{value:.2f}x"


def _versions() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def _throughput_median(runs: list[dict[str, Any]]) -> float:
    return median([run["tasks_per_s"] for run in runs])


def _targets(results: Mapping[str, Any]) -> list[tuple[str, str, str, str, str, bool]]:
    """(benchmark, cloudworker, baseline, ratio, target, met) for the summary table."""
    rows = []
    latency = results.get("roundtrip") or {}
    if "cloudworker" in latency and "stock" in latency:
        ours, base = latency["cloudworker"]["p50"], latency["stock"]["p50"]
        rows.append(
            (
                "round-trip p50",
                f"{_ms(ours)} ms",
                f"{_ms(base)} ms (stock, default get())",
                _x(base / ours),
                f">= {LATENCY_TARGET:g}x (p50 <= 1/5 of stock)",
                base / ours >= LATENCY_TARGET,
            )
        )
    throughput = results.get("throughput") or {}
    if "cloudworker" in throughput and "stock" in throughput:
        ours, base = (
            _throughput_median(throughput["cloudworker"]),
            _throughput_median(throughput["stock"]),
        )
        rows.append(
            (
                "throughput",
                f"{ours:.1f} tasks/s",
                f"{base:.1f} tasks/s (stock, default get())",
                _x(ours / base),
                f">= {THROUGHPUT_TARGET:g}x",
                ours / base >= THROUGHPUT_TARGET,
            )
        )
    stats = results.get("stats")
    if stats:
        rows.append(
            (
                f"compute_stats, {stats['count']:,} ints",
                f"{stats['ours_median_s']:.3f} s",
                f"{stats['baseline_median_s']:.3f} s (statistics)",
                _x(stats["speedup"]),
                f">= {STATS_TARGET:g}x",
                stats["speedup"] >= STATS_TARGET,
            )
        )
    gray = results.get("grayscale")
    if gray:
        rows.append(
            (
                "grayscale, 12 MP JPEG",
                f"{gray['ours_median_s']:.3f} s",
                f"{gray['baseline_median_s']:.3f} s (Pillow)",
                _x(gray["speedup"]),
                f">= {GRAYSCALE_TARGET:g}x",
                gray["speedup"] >= GRAYSCALE_TARGET,
            )
        )
    return rows


def summary_text(results: Mapping[str, Any]) -> str:
    """One line per target, for the terminal."""
    lines = ["", "targets:"]
    for name, ours, base, ratio, target, ok in _targets(results):
        lines.append(
            f"  {name}: {ours} vs {base} = {ratio} (target {target}): {'met' if ok else 'NOT met'}"
        )
    return "\n".join(lines)


def render(
    results: Mapping[str, Any],
    *,
    plan: Any,
    selected: list[str],
    argv: str,
    seconds: float,
    context: Mapping[str, Any],
) -> str:
    """The whole RESULTS.md; ``context`` holds the code version and the machine's load."""
    everything = {"stats", "grayscale", "roundtrip", "throughput", "requests"}
    partial = plan.quick or set(selected) != everything
    command = "make bench" if not partial else f"python -m bench {argv}".strip()
    now = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out = [
        "# Benchmark results",
        "",
        f"- **Command:** `{command}` (`python -m bench`), run on {now}, "
        f"took {seconds / 60:.1f} min."
        + (" **Partial/smoke run: small N, not the published figures.**" if partial else ""),
        f"- **Machine:** nproc {cpus}, Python {platform.python_version()} "
        f"({platform.machine()}, {platform.system()}); {_versions()}. Load average (1 min): "
        f"{context['load_before']:.2f} before the run (other activity on the machine), "
        f"{context['load_after']:.2f} at its end (this run's own processes included).",
        f"- **Code:** {context['code']}.",
        "- **Stack:** one moto server (`python -m moto.server`, a single process, all of SQS "
        "and S3) on loopback; only the worker of the system being measured runs, "
        "`-c 2 -P prefork` and `task_acks_late=True` for both; prefetch: each system's default "
        "(stock: Celery's 4 per process; cloudworker: `CLOUDWORKER_PREFETCH_MULTIPLIER`, 5). "
        "The task queue is drained before each measurement.",
        "- **cloudworker:** `tasks.sqs:Transport` (plain JSON bodies), results in S3 "
        "and pushed to the caller's SQS response queue; `.get(timeout=60)` long-polls it.",
        "- **stock:** Celery 5.7 + kombu's own SQS transport (`sqs://`, endpoint from "
        "`AWS_ENDPOINT_URL`, `wait_time_seconds=10`, `polling_interval=0`, "
        "`visibility_timeout=300`, prefix `stock-`) and the `s3://` result backend, which "
        "`.get()` polls (default `interval=0.5`). See `bench/stock_app.py`.",
        "- **Caveat:** moto is single-process and its SQS cost grows with queue depth; use these "
        "numbers for ratios between the two systems, not for sizing on AWS.",
        "",
    ]
    rows = _targets(results)
    if rows:
        out += [
            "## Summary",
            "",
            "| benchmark | cloudworker | baseline | ratio | target | met |",
            "|---|---|---|---|---|---|",
        ]
        out += [f"| {n} | {o} | {b} | {r} | {t} | {_met(ok)} |" for n, o, b, r, t, ok in rows]
        out.append("")
    if results.get("roundtrip"):
        out += _roundtrip(results["roundtrip"])
    if results.get("throughput"):
        out += _throughput(results["throughput"])
    if results.get("requests"):
        out += _requests(results["requests"])
    if results.get("stats"):
        out += _stats(results["stats"])
    if results.get("grayscale"):
        out += _grayscale(results["grayscale"])
    if results.get("logs"):
        out += _logs(results["logs"])
    return "\n".join(out) + "\n"


def _roundtrip(data: Mapping[str, Any]) -> list[str]:
    base = data.get("stock", {}).get("p50")
    out = [
        "## 1. Round-trip latency",
        "",
        "`compute_stats` on 100 integers, warm client (one untimed warm-up call), N sequential "
        "calls, each timed from just before `.delay()` to `.get()` returning.",
        "",
        "| system | wait | N | p50 (ms) | p95 (ms) | mean (ms) | stock default p50 / p50 |",
        "|---|---|---|---|---|---|---|",
    ]
    labels = {
        "cloudworker": ("cloudworker", "`.get(timeout=60)`: long poll of the response queue"),
        "stock": ("stock (baseline)", "`.get(timeout=60)`: S3 poll, default interval 0.5 s"),
        STOCK_FAST: ("stock (reference)", "`.get(timeout=60, interval=0.05)`"),
    }
    for key, (name, wait) in labels.items():
        if key in data:
            run = data[key]
            ratio = _x(base / run["p50"]) if base else "-"
            out.append(
                f"| {name} | {wait} | {run['n']} | {_ms(run['p50'])} | {_ms(run['p95'])} | "
                f"{_ms(run['mean'])} | {ratio} |"
            )
    if "cloudworker" in data and base:
        ours = data["cloudworker"]["p50"]
        out += [
            "",
            f"Target: cloudworker p50 <= 1/5 of stock's p50 at the default `get()` "
            f"({_ms(base / LATENCY_TARGET)} ms): {_ms(ours)} ms, "
            f"{_met(ours * LATENCY_TARGET <= base)}.",
        ]
    encoders = {key: run.get("json_encoder") for key, run in data.items()}
    out += ["", f"JSON encoder in each client process: {_encoders(encoders)}.", ""]
    return out


def _throughput(data: Mapping[str, Any]) -> list[str]:
    base_runs = data.get("stock")
    base = _throughput_median(base_runs) if base_runs else None
    out = [
        "## 2. Throughput",
        "",
        "Publish N `compute_stats` calls (100 integers each) with `.delay()` in a loop, then "
        "`.get()` each in order; tasks/s = N / (first `.delay()` to last result). One untimed "
        "warm-up call first. Repeated; the median run is reported.",
        "",
        "| system | wait | N | runs (tasks/s) | median tasks/s | publish rate (msg/s) "
        "| CPU, % of one core: moto / worker / client | median / stock default |",
        "|---|---|---|---|---|---|---|---|",
    ]
    labels = {
        "cloudworker": ("cloudworker", "`.get(timeout=60)`"),
        "stock": ("stock (baseline)", "default `.get()` (0.5 s)"),
        STOCK_FAST: ("stock (fairer)", "`.get(interval=0.05)`"),
    }
    for key, (name, wait) in labels.items():
        if key not in data:
            continue
        runs = data[key]
        rates = ", ".join(f"{run['tasks_per_s']:.1f}" for run in runs)
        value = _throughput_median(runs)
        publish = median([run["n"] / run["publish_seconds"] for run in runs])
        ratio = _x(value / base) if base else "-"
        out.append(
            f"| {name} | {wait} | {runs[0]['n']} | {rates} | {value:.1f} | {publish:.0f} "
            f"| {_cpu_cell(runs)} | {ratio} |"
        )
    if "cloudworker" in data and base:
        ours = _throughput_median(data["cloudworker"])
        out += [
            "",
            f"Target: cloudworker >= {THROUGHPUT_TARGET:g}x stock at the default `get()`: "
            f"{_x(ours / base)}, {_met(ours >= THROUGHPUT_TARGET * base)}.",
        ]
        if STOCK_FAST in data:
            fast = _throughput_median(data[STOCK_FAST])
            out.append(f"Against stock with `interval=0.05`: {_x(ours / fast)} (for reference).")
    moto = [
        share
        for runs in data.values()
        for run in runs
        if (share := _cpu_share(run, "moto")) is not None
    ]
    if moto:
        out += [
            "",
            f"CPU is each process group's user+system time over the timed window (median run). "
            f"moto, one Python process, used {min(moto):.0f}-{max(moto):.0f}% of a core in "
            "these runs"
            + (
                ", i.e. it was the bottleneck: the ratio here is mostly the ratio of moto work "
                "per task (requests per task, section 3; SQS calls on a deep queue cost the most), "
                "not of the clients or workers."
                if min(moto) >= 70
                else "."
            ),
        ]
    out.append("")
    return out


def _cpu_share(run: Mapping[str, Any], name: str) -> float | None:
    seconds = run.get("cpu_seconds", {}).get(name)
    return None if seconds is None else 100 * seconds / run["seconds"]


def _cpu_cell(runs: list[dict[str, Any]]) -> str:
    cells = []
    for name in ("moto", "worker", "client"):
        shares = [share for run in runs if (share := _cpu_share(run, name)) is not None]
        cells.append(f"{median(shares):.0f}" if shares else "-")
    return " / ".join(cells)


def _server(run: Mapping[str, Any]) -> dict[str, float]:
    """moto's counts for a run, the idle requests (SQS long polls) subtracted."""
    server, idle = run["server_requests"], run["idle_rate"] * run["window_seconds"]
    return {
        "raw": server["total"],
        "total": server["total"] - idle,
        "sqs": server["sqs"] - idle,
        "s3": server["s3"],
    }


def _requests(data: Mapping[str, Any]) -> list[str]:
    out = [
        "## 3. AWS requests per task",
        "",
        "A throughput-style run of N tasks (warm client). **moto**: request lines moto's log "
        "gained from the first `.delay()` until 2 s after the last result (so the last acks "
        "count), raw and minus the idle rate measured just before with the same worker idle "
        "(idle requests are long polls, so they are taken off SQS). **client**: API calls made "
        "by the client process (botocore `before-call` hooks); **worker** = moto total - client.",
        "",
        "| system | N | window (s) | moto raw | idle (req/s) | moto corrected | **per task** "
        "| SQS / S3 per task | client per task | worker per task | client HTTP attempts |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    names = {
        "cloudworker": "cloudworker",
        "stock": "stock, default get()",
        STOCK_FAST: "stock, get(interval=0.05)",
    }
    for key, name in names.items():
        if key not in data:
            continue
        run = data[key]
        n, server, client = run["n"], _server(run), run["client"]
        out.append(
            f"| {name} | {n} | {run['window_seconds']:.1f} | {server['raw']} | "
            f"{run['idle_rate']:.2f} | {server['total']:.0f} | **{server['total'] / n:.2f}** | "
            f"{server['sqs'] / n:.2f} / {server['s3'] / n:.2f} | {client['calls'] / n:.2f} | "
            f"{(server['total'] - client['http']) / n:.2f} | {client['http']} |"
        )
    operations = sorted({op for run in data.values() for op in run["client"]["by_operation"]})
    keys = [key for key in names if key in data]
    out += [
        "",
        "Client API calls per task, by operation:",
        "",
        "| operation | " + " | ".join(names[k] for k in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for op in operations:
        cells = [f"{data[k]['client']['by_operation'].get(op, 0) / data[k]['n']:.2f}" for k in keys]
        out.append(f"| {op} | " + " | ".join(cells) + " |")
    if "cloudworker" in data and "stock" in data:
        ours = _server(data["cloudworker"])["total"] / data["cloudworker"]["n"]
        base = _server(data["stock"])["total"] / data["stock"]["n"]
        out += [
            "",
            f"Requests per task, cloudworker / stock at the default `get()`: "
            f"{ours:.2f} / {base:.2f} (no target).",
        ]
    out.append("")
    return out


def _stats(data: Mapping[str, Any]) -> list[str]:
    mean_agreement = (
        "identical" if data["mean_equal"] else f"relative difference {data['mean_rel_diff']:.1e}"
    )
    statistics_agreement = (
        "= the exact median rounded to a float"
        if data["median_matches_statistics"]
        else "**differs**"
    )
    return [
        f"## 4. compute_stats on {data['count']:,} integers",
        "",
        f"{data['count']:,} random integers over the whole int64 range (seeded numpy generator), "
        "converted to a Python list once (not timed). Median of the runs.",
        "",
        "| implementation | runs (s) | median (s) | ratio |",
        "|---|---|---|---|",
        f"| `tasks.compute.stats.compute_stats(list)` | {_runs(data['ours_s'])} | "
        f"{data['ours_median_s']:.3f} | {_x(data['speedup'])} |",
        f"| `statistics.mean(list)` + `statistics.median(list)` | {_runs(data['baseline_s'])} | "
        f"{data['baseline_median_s']:.3f} | 1.00x |",
        "",
        f"Target >= {STATS_TARGET:g}x: {_x(data['speedup'])}, "
        f"{_met(data['speedup'] >= STATS_TARGET)}.",
        "",
        f"Agreement: mean {data['mean']!r} vs statistics {data['mean_statistics']!r} "
        f"({mean_agreement}); "
        f"median {data['median']} is {'exact' if data['median_exact'] else '**NOT exact**'} "
        "(checked against a full `numpy.sort`), and statistics.median, which returns a float "
        f"for an even count, gives {data['median_statistics']!r} "
        f"({statistics_agreement}).",
        "",
    ]


def _grayscale(data: Mapping[str, Any]) -> list[str]:
    return [
        "## 5. Grayscale of a 12-megapixel JPEG",
        "",
        f"A {data['width']}x{data['height']} photo-like JPEG (smooth gradients + mild noise, "
        f"seeded, quality 90, {data['input_bytes']:,} bytes). Runs interleaved after one "
        "warm-up each; median.",
        "",
        "| implementation | runs (s) | median (s) | ratio |",
        "|---|---|---|---|",
        f"| `tasks.compute.imaging.to_grayscale(data)` | {_runs(data['ours_s'])} | "
        f"{data['ours_median_s']:.3f} | {_x(data['speedup'])} |",
        "| Pillow: `Image.open(...).convert('L').save(buf, 'JPEG', quality=90)` | "
        f"{_runs(data['baseline_s'])} | {data['baseline_median_s']:.3f} | 1.00x |",
        "",
        f"Target >= {GRAYSCALE_TARGET:g}x: {_x(data['speedup'])}, "
        f"{_met(data['speedup'] >= GRAYSCALE_TARGET)}.",
        "",
        f"Outputs: {'/'.join(map(str, data['ours_mode_size']))} vs "
        f"{'/'.join(map(str, data['pillow_mode_size']))}; decoded grey levels differ by "
        f"{data['mean_abs_diff']:.2g} on average, at most {data['max_abs_diff']} "
        "(to_grayscale decodes the JPEG's own luma instead of converting RGB).",
        "",
    ]


def _logs(data: Mapping[str, Any]) -> list[str]:
    out = ["## Logs of the run", ""]
    for name, found in data["workers"].items():
        line = f"- **{name}**: {found['problems']} ERROR/CRITICAL/traceback line(s)"
        if found["samples"]:
            line += "; first: " + "; ".join(f"`{s}`" for s in found["samples"])
        if found["encoders"]:
            line += "; " + "; ".join(found["encoders"])
        out.append(line + ".")
    statuses = ", ".join(f"{code}: {count}" for code, count in sorted(data["moto_status"].items()))
    out += [
        f"- **moto**: {data['moto_requests']} requests by HTTP status ({statuses}); "
        f"{data['moto_problems']} traceback/exception line(s).",
        "",
    ]
    return out


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def _encoders(encoders: Mapping[str, Any]) -> str:
    return "; ".join(f"{key}: `{value}`" for key, value in encoders.items())


def log_findings(worker_logs: Mapping[str, str], moto_log: Path) -> dict[str, Any]:
    """What the logs say went wrong: worker errors, moto's status codes and tracebacks."""
    workers = {}
    for name, text in worker_logs.items():
        problems = [line.strip() for line in text.splitlines() if _PROBLEM.search(line)]
        encoders = [
            line.split("] ", 1)[-1].strip() for line in text.splitlines() if "json encoder" in line
        ]
        workers[name] = {
            "problems": len(problems),
            "samples": [p[:160] for p in problems[:3]],
            "encoders": sorted(set(encoders)),
        }
    statuses: Counter[str] = Counter()
    problems_in_moto = 0
    if moto_log.exists():
        for line in moto_log.read_bytes().splitlines():
            match = _STATUS.search(line)
            if match and b"HTTP/" in line:
                statuses[match.group(1).decode()] += 1
            elif b"Traceback" in line or b"Exception" in line:
                problems_in_moto += 1
    return {
        "workers": workers,
        "moto_status": dict(statuses),
        "moto_requests": sum(statuses.values()),
        "moto_problems": problems_in_moto,
    }
