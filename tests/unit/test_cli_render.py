"""How the command line prints statistics."""

from __future__ import annotations

import json
from decimal import Decimal

from client.cli import render_stats_json, render_stats_text


def test_json_prints_huge_values_exactly() -> None:
    big = 2**80
    stats = {
        "count": 2,
        "mean": 6.044629098073146e23,
        "median": Decimal(f"{big}.5"),
        "min": big,
        "max": big + 1,
    }
    text = render_stats_json(stats)
    assert text == (
        '{"count": 2, "mean": 6.044629098073146e+23, '
        f'"median": {big}.5, "min": {big}, "max": {big + 1}}}'
    )
    assert list(json.loads(text)) == ["count", "mean", "median", "min", "max"]


def test_text_output() -> None:
    stats = {"count": 3, "mean": 2.0, "median": 2, "min": 1, "max": 3}
    assert render_stats_text(stats).splitlines() == [
        "count  3",
        "mean   2.0",
        "median 2",
        "min    1",
        "max    3",
    ]
