"""Unit tests: the project's task code on an app in memory (no endpoint, no AWS)."""

from __future__ import annotations

from typing import Any

import pytest

import tasks
from cloudworker import InvalidArguments


def test_a_task_runs_on_the_in_memory_app(cloudworker_app: Any) -> None:
    total = cloudworker_app.task(name="shop.total")(tasks.total.run)
    assert total.delay([1, 2, 3]).get() == 6


def test_arguments_that_do_not_fit_the_signature_are_refused_before_anything_runs(
    cloudworker_app: Any,
) -> None:
    add = cloudworker_app.task(name="shop.add")(tasks.add.run)
    with pytest.raises(InvalidArguments, match="missing a required argument"):
        add.delay(1)
