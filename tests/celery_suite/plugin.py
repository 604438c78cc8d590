"""Celery 5.7.0's own integration tests (``t/integration``) run against cloudworker.

``python -m tests.celery_suite`` loads this plugin with ``-p tests.celery_suite.plugin``,
after ``-p celery.contrib.pytest`` (the fixtures the suite's ``conftest.py`` relies on
but does not import: ``celery_parameters``, ``celery_worker_parameters``...; the
``pytest-celery`` package would load the same module, plus Docker tooling). No file of
the suite is changed:

* every app the suite makes (``celery_app`` for each test, ``celery_session_app`` for
  the worker; both through ``celery.contrib.testing.app.TestApp``) is made by
  :func:`tasks.create_app`: our transport, backend, JSON-only serializer, task class
  and bootsteps, with the settings of a local stack started here as ``make up`` does
  (moto, provisioned; no worker process). The one change to those settings is the
  task queue's name, ``celery``: the suite fails any test whose app has another
  queue (``t/integration/conftest.py:132-144``). Of the suite's configuration only
  what chooses no broker, backend or content type is kept (:data:`KEPT`).
* the worker is the suite's own: ``celery_session_worker`` runs a ``WorkController``
  in a thread of this process (prefork pool, one child), which takes cloudworker's
  consumer (``worker_consumer``) and bootsteps from the app. It has to be in this
  process: the tests read its state (``celery.worker.state``, ``os.getpid()``).
* the tests listed in ``excluded.txt`` are skipped with their reason; any other test
  that skips or xfails fails, and an entry that matches nothing is an error, so the
  list is the whole account of what does not pass.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

EXCLUDED_FILE = Path(__file__).with_name("excluded.txt")
#: More exclusions on moto: tests its server is measurably too slow for.
EXCLUDED_ON_MOTO = Path(__file__).with_name("excluded-moto.txt")
#: The one queue the suite lets its apps have.
TASK_QUEUE = "celery"
#: Read by the suite's conftest.py at import (``TEST_BACKEND``, conftest.py:22) and
#: compared with "rpc"/"redis" by the tests: cloudworker's backend is neither.
TEST_BACKEND = "cloudworker.results.backend:CloudworkerBackend"

#: Settings of the suite (``celery_config``, conftest.py:77-99) and of ``TestApp``
#: (``DEFAULT_TEST_CONFIG``, celery/contrib/testing/app.py:11-20) applied on top of
#: cloudworker's. ``test_inspect.py::test_conf`` expects several among the changes.
KEPT = frozenset(
    {
        "result_extended",
        "task_create_missing_queues",
        "worker_hijack_root_logger",
        "worker_log_color",
        "enable_utc",
        "timezone",
        "broker_heartbeat",
    }
)
#: Settings that pick the broker, the backend or the accepted content (cloudworker
#: fixes those), or configure a backend it does not use: left as cloudworker has them.
REPLACED = frozenset(
    {
        "broker_url",
        "result_backend",
        "accept_content",
        "cassandra_servers",
        "cassandra_keyspace",
        "cassandra_table",
        "cassandra_read_consistency",
        "cassandra_write_consistency",
    }
)


@dataclass
class _Stack:
    settings: Any
    services: Any


_stack: _Stack | None = None
_EXCLUDED = pytest.StashKey[bool]()


# -- the environment the suite reads at import ---------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Before the suite's conftest.py is imported (it reads these at import)."""
    os.environ["TEST_BACKEND"] = TEST_BACKEND
    # An embedded worker connects to TEST_BROKER when it is set (worker.py:158).
    os.environ.pop("TEST_BROKER", None)
    # Celery's CI level for the embedded worker (read when the worker module is imported).
    os.environ.setdefault("WORKER_LOGLEVEL", "INFO")


def pytest_configure(config: pytest.Config) -> None:
    from celery.contrib.testing import app as testing_app

    # celery.contrib.pytest's _create_app imports TestApp when it is called (pytest.py:40).
    testing_app.TestApp = cloudworker_test_app
    from deploy.endpoints import chosen

    entries = load_excluded(EXCLUDED_FILE)
    if chosen(os.environ).name == "moto":
        entries.update(load_excluded(EXCLUDED_ON_MOTO))
    config.pluginmanager.register(Exclusions(entries), "celery-suite-excluded")


# -- the apps and the local stack ----------------------------------------------------------


def cloudworker_test_app(
    name: str | None = None,
    config: dict[str, Any] | None = None,
    *,
    enable_logging: bool = False,
    set_as_current: bool = False,
    log: Any = None,
    backend: Any = None,
    broker: Any = None,
    **parameters: Any,
) -> Any:
    """``celery.contrib.testing.app.TestApp``, made by :func:`tasks.create_app`."""
    from celery.contrib.testing import tasks as _testing_tasks  # noqa: F401 - celery.ping
    from celery.contrib.testing.app import DEFAULT_TEST_CONFIG

    from cloudworker.application import create_app

    if _stack is None:
        raise RuntimeError("the local stack is not running (fixture cloudworker_stack)")
    if backend is not None or broker is not None or parameters:
        raise RuntimeError(f"celery_parameters are not supported against cloudworker: {parameters}")
    wanted = {**DEFAULT_TEST_CONFIG, **(config or {})}
    unknown = set(wanted) - KEPT - REPLACED
    if unknown:
        # A setting the suite started to use: decide whether it may apply to cloudworker.
        raise RuntimeError(f"settings of the suite not classified in {__name__}: {sorted(unknown)}")
    app = create_app(_stack.settings, services=_stack.services)
    app.conf.update({key: value for key, value in wanted.items() if key in KEPT})
    return app


@pytest.fixture(scope="session", autouse=True)
def cloudworker_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """moto on a free port, provisioned with the ``celery`` task queue, for the session.

    As tests/integration/conftest.py starts its stack, minus the worker processes:
    the worker is the suite's embedded one.
    """
    global _stack
    import boto3

    from cloudworker.services import Services
    from cloudworker.settings import Settings
    from deploy import local
    from deploy.provision import provision

    run = local.Stack(tmp_path_factory.mktemp("run"))
    saved = dict(os.environ)
    services = None
    try:
        env = local.up(run, workers=0, flower=False)
        env["CLOUDWORKER_TASK_QUEUE"] = TASK_QUEUE
        os.environ.update(env)
        settings = Settings.from_env(env)
        session = boto3.session.Session()
        endpoint = env["AWS_ENDPOINT_URL"]
        provision(
            settings,
            sqs=session.client("sqs", endpoint_url=endpoint, region_name=settings.region),
            s3=session.client("s3", endpoint_url=endpoint, region_name=settings.region),
        )
        # One Services for every app of this process, as a worker or client process has.
        services = Services(settings)
        _stack = _Stack(settings, services)
        yield env
    finally:
        _stack = None
        if services is not None:
            services.mailbox.close()  # while the endpoint still runs
        local.down(run)
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def celery_worker_parameters() -> dict[str, Any]:
    """For celery.contrib.testing.worker.start_worker: longer waits than its 10 s."""
    return {"ping_task_timeout": 30.0, "shutdown_timeout": 60.0}


# -- excluded.txt ---------------------------------------------------------------------------


def load_excluded(path: Path) -> dict[str, str]:
    """``NODE_ID  # reason`` lines: node id (or a file or class prefix) -> reason."""
    entries: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        node, separator, reason = text.partition(" # ")
        node, reason = node.strip(), reason.strip()
        if not separator or not reason or not node or " " in node:
            raise pytest.UsageError(f"{path}:{number}: expected 'NODE_ID  # reason', got {text!r}")
        if node in entries:
            raise pytest.UsageError(f"{path}:{number}: {node} is listed twice")
        entries[node] = reason
    return entries


def _candidates(nodeid: str) -> list[str]:
    """The entries that may name ``nodeid``: itself, without parameters, its class, its file."""
    parts = nodeid.split("::")
    found = [nodeid, nodeid.split("[", 1)[0]]
    found += ["::".join(parts[:end]) for end in range(len(parts) - 1, 0, -1)]
    return found


class Exclusions:
    """Applies excluded.txt; fails a test that does not pass for another reason."""

    def __init__(self, entries: dict[str, str]) -> None:
        self.entries = entries
        self.used: set[str] = set()
        self.files: set[str] = set()

    def entry_for(self, nodeid: str) -> str | None:
        return next((c for c in _candidates(nodeid) if c in self.entries), None)

    @pytest.hookimpl(tryfirst=True)  # before the session and the terminal count it
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """A file listed whole is skipped even when it cannot be imported.

        test_backend.py imports celery.backends.azureblockblob (line 6), which needs
        the Azure SDK, before its own importorskip("azure") (line 8): without Azure
        its collection fails instead of skipping.
        """
        if not report.nodeid.endswith(".py"):
            return
        self.files.add(report.nodeid)
        if report.passed:
            return
        entry = self.entry_for(report.nodeid)
        if entry is None:
            if report.skipped:
                report.outcome = "failed"
                report.longrepr = f"{report.nodeid} skipped, and not listed in {EXCLUDED_FILE}"
            return
        self.used.add(entry)
        error = str(report.longrepr).strip().splitlines()[-1:] if report.failed else []
        reason = f"excluded ({EXCLUDED_FILE.name}): {self.entries[entry]}"
        report.outcome = "skipped"
        text = " ".join([reason, *(f"[{line}]" for line in error)])
        # No line number: pytest's summary then shows the file alone.
        report.longrepr = (report.fspath, None, text)  # type: ignore[assignment]

    @pytest.hookimpl(tryfirst=True)  # before -k/-m/--deselect drop items
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            entry = self.entry_for(item.nodeid)
            if entry is None:
                continue
            self.used.add(entry)
            item.stash[_EXCLUDED] = True
            reason = f"excluded ({EXCLUDED_FILE.name}): {self.entries[entry]}"
            item.add_marker(pytest.mark.skip(reason=reason))

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # Entries of the files collected that name nothing: a typo, or a test renamed upstream.
        stale = sorted(
            entry
            for entry in set(self.entries) - self.used
            if entry.split("::", 1)[0] in self.files
        )
        if stale:
            raise pytest.UsageError(f"{EXCLUDED_FILE} names no collected test: {stale}")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: Any) -> Any:
        report = yield
        if report.skipped and not item.stash.get(_EXCLUDED, False):
            if hasattr(report, "wasxfail"):
                why = f"xfailed ({report.wasxfail})"
                del report.wasxfail
            else:
                longrepr = report.longrepr
                why = f"skipped ({longrepr[2] if isinstance(longrepr, tuple) else longrepr})"
            report.outcome = "failed"
            report.longrepr = f"{why}, and not listed in {EXCLUDED_FILE}"
        return report
