"""``Task.replace`` in a worker (cloudworker/task.py): the replacement answers the caller.

Celery freezes the replacement in the worker, giving its last step the replaced
task's id and the worker's own reply address; the caller waits for that id in
its own response queue, so that step must answer there.
"""

from __future__ import annotations

from typing import Any

import pytest
from celery import Task, chain, group

from cloudworker.application import CloudworkerCelery


@pytest.fixture
def replaced(memory_app: CloudworkerCelery, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The signatures Celery would send in place of the task (nothing is sent)."""
    sent: list[Any] = []
    monkeypatch.setattr(Task, "on_replace", lambda self, sig: sent.append(sig))
    return sent


@pytest.mark.parametrize("shape", ["group", "chain", "task"])
def test_the_step_with_the_replaced_id_answers_the_caller(
    memory_app: CloudworkerCelery, replaced: list[Any], shape: str
) -> None:
    @memory_app.task(bind=True, name=f"tests.replacer_{shape}", shared=False)  # type: ignore[untyped-decorator]
    def replacer(self: Task) -> None: ...

    add = memory_app.signature("tests.add")
    sig = {
        "group": group(add.clone(), add.clone()),
        "chain": chain(add.clone(), add.clone()),
        "task": add.clone(),
    }[shape]
    replacer.push_request(id="replaced-id", reply_to="caller-queue", chain=None)
    try:
        replacer.replace(sig)
    finally:
        replacer.pop_request()
    (sent,) = replaced
    last = {
        "group": lambda s: s.body,  # uplifted to a chord, the body answers
        "chain": lambda s: s.tasks[-1],
        "task": lambda s: s,
    }[shape](sent)
    assert last.id == "replaced-id"
    assert last.options["reply_to"] == "caller-queue"
