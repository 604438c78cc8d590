"""How a failure reaches the caller (results/backend.py), on the in-memory store and queues.

A failed chord part tells its caller only after its failure has reached the
chord's body and the steps chained after it; a group chained after a failed task
has its members failed; and a caller about to raise a failure checks the parents
in S3 when their notices have not come yet, so it raises the cause.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from celery import group, states
from celery.app.task import Context
from celery.exceptions import ChordError

from cloudworker.application import CloudworkerCelery
from cloudworker.results.backend import CloudworkerBackend


class Cause(Exception):
    """The failure of a header task."""


def backend_of(app: CloudworkerCelery) -> CloudworkerBackend:
    backend = app.backend
    assert isinstance(backend, CloudworkerBackend)
    return backend


def record_notices(backend: CloudworkerBackend, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    sent: list[str] = []
    monkeypatch.setattr(
        backend.services.notifier, "send", lambda reply_to, task_id, *rest: sent.append(task_id)
    )
    return sent


def test_a_failed_chord_part_is_announced_after_the_failures_it_causes(
    memory_app: CloudworkerCelery, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = backend_of(memory_app)
    sent = record_notices(backend, monkeypatch)
    seen_at_join: list[list[str]] = []

    def part_returned(request: Any, state: str, result: Any, **kwargs: Any) -> None:
        # The last part: the chord's body fails with ChordError (Celery's stack).
        seen_at_join.append(list(sent))
        # Celery fails a group body's members, then the steps chained after the body.
        backend.mark_as_failure("member", ChordError("Dependency part raised Cause()"))
        backend.mark_as_failure("next-step", ChordError("Dependency part raised Cause()"))

    monkeypatch.setattr(backend, "on_chord_part_return", part_returned)
    request = Context(id="part", group="g", chord={"task": "tests.total"}, reply_to="q")
    backend.mark_as_failure("part", Cause("boom"), request=request)
    assert seen_at_join == [[]]  # the part's result was stored, its notice held
    assert sent == ["next-step", "member", "part"]  # the last step first, the part last
    assert memory_app.AsyncResult("part").state == states.FAILURE


def test_a_failed_task_outside_a_chord_is_announced_at_once(
    memory_app: CloudworkerCelery, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = backend_of(memory_app)
    sent = record_notices(backend, monkeypatch)
    backend.mark_as_failure("plain", Cause("boom"), request=Context(id="plain", reply_to="q"))
    assert sent == ["plain"]


def test_the_members_of_a_group_chained_after_a_failure_fail_too(
    memory_app: CloudworkerCelery,
) -> None:
    backend = backend_of(memory_app)
    members = group(memory_app.signature("tests.add"), memory_app.signature("tests.add"))
    members.freeze()
    # As a worker receives it: the request's chain is JSON.
    chain = json.loads(json.dumps([memory_app.signature("tests.add"), members]))
    ids = [t["options"]["task_id"] for t in chain[1]["kwargs"]["tasks"]]
    assert len(set(ids)) == 2
    backend._fail_chain(chain, Cause("boom"))
    for task_id in ids:
        result = memory_app.AsyncResult(task_id)
        assert result.state == states.FAILURE
        assert isinstance(result.result, Cause)


def test_a_caller_raises_the_parents_failure_whose_notice_has_not_come(
    memory_app: CloudworkerCelery,
) -> None:
    backend = backend_of(memory_app)
    mailbox = memory_app.services.mailbox
    parent_id, body_id = str(uuid.uuid4()), str(uuid.uuid4())
    mailbox.open()  # the queue a waiting client has
    mailbox.expect(parent_id)
    mailbox.expect(body_id)
    # The parent's result is in S3 but its notice is held; the body's notice comes.
    here = Context(reply_to=backend.reply_address())
    backend.store_result(parent_id, Cause("the cause"), states.FAILURE, request=Context())
    backend.store_result(body_id, ChordError("Dependency raised"), states.FAILURE, request=here)
    parent = memory_app.AsyncResult(parent_id)
    body = memory_app.AsyncResult(body_id, parent=parent)
    with pytest.raises(Cause, match="the cause"):
        body.get(timeout=10)
