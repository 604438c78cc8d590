"""A Celery app of the user's own, adopted through the cloudworker:// scheme (no endpoint)."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from celery import Celery, Task, shared_task
from celery.exceptions import ImproperlyConfigured

import cloudworker  # noqa: F401 - registers the cloudworker:// scheme
from cloudworker.application import CloudworkerApp
from cloudworker.settings import Settings, SettingsError
from cloudworker.task import CloudworkerTask


def plain_app(**conf: Any) -> Any:
    app = Celery("shop", broker="cloudworker://", set_as_current=False)
    app.conf.update(conf)
    return app


def test_an_app_naming_the_scheme_is_adopted_when_its_configuration_is_read() -> None:
    app = plain_app(cloudworker_bucket="shop-results")
    assert not isinstance(app, CloudworkerApp)
    assert app.conf.broker_url == "cloudworker://"  # the first read
    assert isinstance(app, CloudworkerApp) and isinstance(app, Celery)
    assert app.services.settings.bucket == "shop-results"
    assert app.conf.result_backend == "cloudworker://"


def test_an_app_naming_another_broker_is_left_alone() -> None:
    app = Celery("other", broker="memory://", set_as_current=False)
    app.finalize()
    assert not isinstance(app, CloudworkerApp) and not hasattr(app, "services")


def test_the_users_settings_win_over_cloudworkers_defaults() -> None:
    app = plain_app(
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        task_default_queue="shop",
        broker_transport_options={"visibility_timeout": 77, "extra": "kept"},
    )
    conf = app.conf
    assert (conf.task_acks_late, conf.worker_prefetch_multiplier) == (False, 1)
    assert conf.task_default_queue == "shop"
    options = conf.broker_transport_options
    assert options["visibility_timeout"] == 77 and options["extra"] == "kept"
    assert options["queue_name_prefix"] == app.services.settings.queue_prefix  # ours, merged
    # Where the user set nothing, cloudworker's defaults (README: Differences from Celery).
    assert conf.task_reject_on_worker_lost is True and conf.task_track_started is True


def test_settings_in_app_conf_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDWORKER_BUCKET", "from-env")
    monkeypatch.setenv("CLOUDWORKER_QUEUE_PREFIX", "env-")
    found = Settings.from_conf({"cloudworker_bucket": "from-conf", "cloudworker_wait_seconds": 3})
    assert (found.bucket, found.queue_prefix, found.wait_seconds) == ("from-conf", "env-", 3)
    with pytest.raises(SettingsError, match="cloudworker_wait_seconds=True is not a int"):
        Settings.from_conf({"cloudworker_wait_seconds": True})


@pytest.mark.parametrize(
    ("key", "value"),
    [("task_serializer", "pickle"), ("accept_content", ["json", "pickle"])],
)
def test_a_serializer_other_than_json_is_refused_when_adopted(key: str, value: Any) -> None:
    app = plain_app(**{key: value})
    with pytest.raises(ImproperlyConfigured, match="JSON only"):
        app.finalize()  # as the worker does, and any use of a task
    assert not hasattr(app, "services")


def test_every_task_gets_cloudworkers_task_class_whatever_its_base() -> None:
    class Audited(Task):  # type: ignore[misc]
        throws = (KeyError,)

    app = plain_app()

    @app.task(base=Audited, shared=False)  # type: ignore[untyped-decorator]
    def audited(x: int) -> int:
        return x

    @shared_task(name="shop.shared")  # type: ignore[untyped-decorator]
    def shared(x: int) -> int:
        return x

    app.finalize()
    for task in (
        app.tasks[audited.name],
        app.tasks["shop.shared"],
        app.tasks["celery.chord_unlock"],
    ):
        assert isinstance(task, CloudworkerTask), task
    task = app.tasks[audited.name]
    assert isinstance(task, Audited) and KeyError in task.throws and task.max_retries == 3


def test_a_base_with_its_own_request_is_refused_when_its_task_is_registered() -> None:
    class OwnRequest(Task):  # type: ignore[misc]
        Request = "shop.requests:Mine"

    app = plain_app()
    app.finalize()
    with pytest.raises(ImproperlyConfigured, match="sets its own Request"):

        @app.task(base=OwnRequest, lazy=False, shared=False)  # type: ignore[untyped-decorator]
        def refused() -> None:
            pass


def test_an_adopted_app_pickles_as_the_users_class_and_comes_back_adopted() -> None:
    app = plain_app()
    app.conf.broker_url  # noqa: B018 - read: adopted
    again = pickle.loads(pickle.dumps(app))
    assert isinstance(again, CloudworkerApp) and again.conf.broker_url == "cloudworker://"
