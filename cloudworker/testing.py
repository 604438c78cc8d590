"""A pytest plugin for testing a project's own tasks on cloudworker.

Installed with the package (the ``pytest11`` entry point ``cloudworker``), so a
project's tests use its fixtures with no import and no ``conftest.py``:

* **Unit tests**, with no endpoint and no AWS: ``cloudworker_app`` is an app on
  in-memory S3 and SQS (``cloudworker_memory``) that runs what is sent to it in
  the test's own process (``task_always_eager``), through cloudworker's task
  class (arguments are checked against the task's signature and its
  ``argument_check``) and result backend (results are stored in the in-memory
  bucket). Register the function under test on it:
  ``cloudworker_app.task(name="t")(my_function)``.
* **Integration tests**: ``cloudworker_worker`` is a worker process of the
  project's own app, ``celery -A <module> worker``, started once per session
  against the endpoint the environment names (after ``. .run/env`` of
  ``python -m deploy local up --workers 0``, or on AWS) and stopped at its end;
  the fixture's value is the project's app, ready to send to it. ``<module>`` is
  ``--cloudworker-app`` or the ini option ``cloudworker_app``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["cloudworker_app", "cloudworker_memory", "cloudworker_worker"]

#: Seconds a worker may take to start, and to stop once asked.
_START_TIMEOUT = 90.0
_STOP_TIMEOUT = 60.0
#: What Celery's worker logs once it consumes.
_READY = " ready."


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cloudworker")
    group.addoption(
        "--cloudworker-app",
        default=None,
        help="module of the Celery app the cloudworker_worker fixture runs (celery -A MODULE)",
    )
    parser.addini("cloudworker_app", "module of the Celery app cloudworker_worker runs", default="")


@pytest.fixture
def cloudworker_memory() -> Any:
    """cloudworker's services on in-memory S3, SQS and SNS (settings from the environment)."""
    from cloudworker.objectstore import MemoryObjectStore
    from cloudworker.queues import MemoryQueueService
    from cloudworker.services import Services
    from cloudworker.settings import Settings
    from cloudworker.topics import MemoryTopicService

    store, queues, topics = MemoryObjectStore(), MemoryQueueService(), MemoryTopicService()
    return Services(
        Settings.from_env(), store=lambda: store, queues=lambda: queues, topics=lambda: topics
    )


@pytest.fixture
def cloudworker_app(cloudworker_memory: Any) -> Iterator[Any]:
    """An app on ``cloudworker_memory`` that runs the tasks sent to it in this process."""
    from cloudworker import codec
    from cloudworker.application import create_app

    # Making an app installs its codec process-wide: the one before comes back after.
    previous = codec.installed()
    app = create_app(cloudworker_memory.settings, services=cloudworker_memory)
    app.conf.update(
        task_always_eager=True, task_eager_propagates=True, task_store_eager_result=True
    )
    try:
        yield app
    finally:
        if previous is not None:
            codec.install(previous)


@pytest.fixture(scope="session")
def cloudworker_worker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """A worker process of the project's app for the session; the value is that app."""
    from celery.app.utils import find_app

    config = request.config
    module = config.getoption("cloudworker_app") or config.getini("cloudworker_app")
    if not module:
        raise pytest.UsageError(
            "cloudworker_worker needs the module of your Celery app: "
            "--cloudworker-app=MODULE or `cloudworker_app = MODULE` in pytest's ini file"
        )
    app = find_app(module)
    root = Path(config.rootpath)
    log = tmp_path_factory.mktemp("cloudworker") / "worker.log"
    hostname = f"cloudworker-test-{uuid.uuid4().hex[:8]}@%h"
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
    command = [
        sys.executable, "-m", "celery", "-A", module, "worker",
        "--loglevel=INFO", "--concurrency=2", f"--hostname={hostname}",
    ]  # fmt: skip
    with log.open("ab") as output:
        process = subprocess.Popen(
            command,
            cwd=root,
            env={**os.environ, "PYTHONPATH": path},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_ready(process, log)
        yield app
    finally:
        _stop(process)
        app.services.mailbox.close()


def _wait_ready(process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while _READY not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the cloudworker worker did not start; its log ends:\n{tail}")
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (Celery's warm shutdown), then the whole group if it does not end."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
