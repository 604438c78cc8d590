"""The Grafana dashboard (deploy/grafana/cloudworker.json) against the exporter's metrics.

A dashboard is only checked when someone opens it, and a misspelt metric draws
an empty panel rather than an error. So: the file is a dashboard Grafana
imports (schema, a Prometheus data source input and variable, panels with
unique ids, places on the grid that do not overlap, queries), every metric a
query names is one that ``python -m deploy.exporter`` exports, and every one it
exports is shown somewhere.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "cloudworker.json"
D: dict[str, Any] = json.loads(DASHBOARD.read_text())

#: What the exporter publishes (its labels in the comments).
EXPORTED = {
    # name, hostname, queue_name (failed: and exception)
    "celery_task_sent_total",
    "celery_task_received_total",
    "celery_task_started_total",
    "celery_task_succeeded_total",
    "celery_task_failed_total",
    "celery_task_retried_total",
    "celery_task_rejected_total",
    "celery_task_revoked_total",
    "celery_task_runtime",  # a histogram: _bucket, _sum, _count
    "celery_worker_up",  # hostname
    "celery_worker_tasks_active",  # hostname
    "celery_queue_length",  # queue_name
    "cloudworker_queue_oldest_task_age_seconds",  # queue_name
    "cloudworker_queue_messages_in_flight",  # queue_name
    "cloudworker_dead_letter_queue_length",  # queue_name
    "cloudworker_response_queues",
    "cloudworker_claim_checked_bytes",
}
HISTOGRAMS = {"celery_task_runtime"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
METRIC = re.compile(r"\b(?:celery|cloudworker)_[A-Za-z0-9_]+")
GRID_WIDTH = 24


def panels() -> list[dict[str, Any]]:
    """Every panel, rows included, with those nested in collapsed rows."""
    found: list[dict[str, Any]] = []
    for panel in D["panels"]:
        found.append(panel)
        found += panel.get("panels", [])
    return found


def queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of every panel."""
    return [(p["title"], t["expr"]) for p in panels() for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names of ``expr``, histogram series named by their histogram."""
    names = set()
    for found in METRIC.findall(expr):
        bases = [found.removesuffix(suffix) for suffix in HISTOGRAM_SUFFIXES]
        names.add(next((base for base in bases if base != found and base in HISTOGRAMS), found))
    return names


def test_it_is_a_dashboard_grafana_imports() -> None:
    assert D["schemaVersion"] == 39
    assert D["title"] and D["uid"] and D.get("id") is None  # Grafana assigns the id
    (source,) = D["__inputs"]
    assert (source["name"], source["type"], source["pluginId"]) == (
        "DS_PROMETHEUS",
        "datasource",
        "prometheus",
    )
    variables = {v["name"]: v for v in D["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == "${DS_PROMETHEUS}"
    queue = variables["queue_name"]
    assert queue["type"] == "query"
    assert queue["definition"] == "label_values(celery_queue_length, queue_name)"
    assert queue["query"]["query"] == queue["definition"]
    assert queue["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_panels_have_unique_ids_places_on_the_grid_and_queries() -> None:
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], int] = {}
    for panel in panels():
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid), panel["title"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= GRID_WIDTH
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = panel["id"]
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"] == panel["datasource"]


def test_queries_name_only_the_exporters_metrics() -> None:
    unknown = {(title, name) for title, expr in queries() for name in metric_names(expr) - EXPORTED}
    assert unknown == set()


def test_every_exported_metric_is_on_a_panel() -> None:
    shown = {name for _, expr in queries() for name in metric_names(expr)}
    assert EXPORTED - shown == set()


def test_the_checks_catch_a_misspelt_metric_and_a_histogram_series() -> None:
    assert metric_names('rate(celery_task_runtime_bucket{queue_name=~"$queue_name"}[5m])') == {
        "celery_task_runtime"
    }
    assert metric_names("celery_tasks_failed_total + celery_worker_up_bucket") == {
        "celery_tasks_failed_total",  # misspelt: not exported
        "celery_worker_up_bucket",  # not a histogram: no suffix to drop
    }


def test_the_throughput_panel_shows_every_state_and_runtimes_are_quantiles() -> None:
    by_title = {p["title"]: p for p in panels()}
    throughput = " ".join(t["expr"] for t in by_title["Task throughput by state"]["targets"])
    for state in ("sent", "received", "started", "succeeded", "failed", "retried", "rejected"):
        assert f"celery_task_{state}_total" in throughput
    assert "celery_task_revoked_total" in throughput
    failures = by_title["Failures by exception"]["targets"][0]["expr"]
    assert "exception" in failures and "celery_task_failed_total" in failures
    runtimes = [t["expr"] for t in by_title["Task runtime p50 and p95"]["targets"]]
    assert [e.split(",")[0] for e in runtimes] == [
        "histogram_quantile(0.5",
        "histogram_quantile(0.95",
    ]
