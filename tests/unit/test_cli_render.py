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


def test_integers_beyond_the_int_str_digit_limit() -> None:
    big = 7 * 10**10_000 + 3  # 10,001 digits: repr() raises ValueError
    stats = {"count": 2, "mean": 1.5, "median": -big, "min": -big, "max": big}
    text = render_stats_json(stats)
    digits = "7" + "0" * 9_999 + "3"
    assert text == (
        f'{{"count": 2, "mean": 1.5, "median": -{digits}, "min": -{digits}, "max": {digits}}}'
    )
    assert render_stats_text(stats).splitlines()[4] == f"max    {digits}"


def test_huge_decimal_half_integer() -> None:
    digits = "123456789" * 5_000  # 45,000 digits
    stats = {"count": 2, "mean": 1.5, "median": Decimal(f"-{digits}.5"), "min": 1, "max": 2}
    assert f'"median": -{digits}.5,' in render_stats_json(stats)
    assert render_stats_text(stats).splitlines()[2] == f"median -{digits}.5"
