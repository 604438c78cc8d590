"""A worker's run whose final result S3 refuses ends as Celery's Reject(requeue=True)."""

from __future__ import annotations

from typing import Any

import pytest
from celery import states
from celery.exceptions import Reject

from cloudworker.results.finishing import redelivering, stored_or_redelivered, unstored


def refused() -> None:
    raise PermissionError("AccessDenied: the bucket's policy")


def tracer_storing(task_id: str, store: Any) -> Any:
    def tracer(uuid: str, args: Any, kwargs: Any, request: Any = None) -> Any:
        stored_or_redelivered(task_id, store)
        return ("R", None, 0.5, "'R'")

    return tracer


def test_a_refused_store_in_the_run_hands_the_message_back() -> None:
    einfo, info, runtime, _ = redelivering(tracer_storing("t1", refused))("t1", [], {})
    reject = einfo.exception.exc  # billiard's ExceptionWithTraceback, as Celery unwraps it
    assert isinstance(reject, Reject)
    assert reject.requeue is True
    assert "AccessDenied: the bucket's policy" in str(reject.reason)
    assert info.state == states.REJECTED
    assert runtime == 0.5


def test_a_stored_result_leaves_the_run_as_it_was() -> None:
    stored: list[str] = []
    outcome = redelivering(tracer_storing("t1", lambda: stored.append("t1")))("t1", [], {})
    assert outcome == ("R", None, 0.5, "'R'")
    assert stored == ["t1"]


def test_another_tasks_store_and_a_store_outside_a_run_raise() -> None:
    with pytest.raises(PermissionError):
        redelivering(tracer_storing("other", refused))("t1", [], {})
    with pytest.raises(PermissionError):
        stored_or_redelivered("t1", refused)


def test_what_follows_a_refused_store_in_the_run_waits_for_the_redelivery() -> None:
    seen: list[tuple[str, bool]] = []

    def tracer(uuid: str, args: Any, kwargs: Any, request: Any = None) -> Any:
        seen.append(("before", unstored("t1")))
        stored_or_redelivered("t1", refused)
        seen.append(("after", unstored("t1")))
        seen.append(("another task", unstored("t2")))
        return ("R", None, 0.5, "'R'")

    redelivering(tracer)("t1", [], {})
    assert seen == [("before", False), ("after", True), ("another task", False)]
    assert unstored("t1") is False  # outside the run
