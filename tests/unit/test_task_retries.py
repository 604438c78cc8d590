"""A task's retries: Celery's default limit, and cloudworker's own for transient AWS errors."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from celery.exceptions import Retry

from cloudworker.application import CloudworkerCelery
from cloudworker.task import TRANSIENT_RETRIES


def test_a_task_keeps_celerys_default_max_retries(memory_app: CloudworkerCelery) -> None:
    @memory_app.task(name="user.plain")  # type: ignore[untyped-decorator]
    def plain() -> None:
        """A user's task that says nothing of retries."""

    @memory_app.task(name="user.patient", max_retries=11)  # type: ignore[untyped-decorator]
    def patient() -> None:
        """One that says more."""

    assert plain.max_retries == 3
    assert patient.max_retries == 11


@pytest.mark.parametrize(("own", "limit"), [(3, TRANSIENT_RETRIES), (20, 20), (None, None)])
def test_a_transient_error_fetching_the_arguments_has_its_own_retry_limit(
    memory_app: CloudworkerCelery, monkeypatch: pytest.MonkeyPatch, own: Any, limit: Any
) -> None:
    @memory_app.task(name="user.fetching", max_retries=own)  # type: ignore[untyped-decorator]
    def fetching(value: int) -> int:
        return value

    def unreachable(*_: Any, **__: Any) -> Any:
        raise EndpointConnectionError(endpoint_url="http://s3")

    asked: dict[str, Any] = {}

    def retry(**options: Any) -> Retry:
        asked.update(options)
        return Retry("again")

    monkeypatch.setattr(memory_app.services.codec, "resolve", unreachable)
    monkeypatch.setattr(fetching, "retry", retry)
    fetching.push_request(id="t-1", retries=0, called_directly=False)
    try:
        with pytest.raises(Retry):
            fetching(1)
    finally:
        fetching.pop_request()
    assert asked["max_retries"] == limit
    assert isinstance(asked["exc"], EndpointConnectionError)
