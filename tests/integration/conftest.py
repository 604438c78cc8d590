"""The integration harness: a real local AWS endpoint and real worker processes.

The stack is started by the same code as ``make up`` (:mod:`deploy.local`), in a
temporary run directory with its own endpoint port, so the tests never touch a
stack the developer has running. Clients in the test process use a fresh app
built from the stack's environment; CLI tests run ``python -m client`` in a
subprocess with that environment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from cloudworker.application import CloudworkerCelery, create_app
from cloudworker.settings import Settings
from deploy import local
from deploy.provision import provision
from tasks.definitions import TaskSet, register
from tests.support.faultproxy import FaultProxy
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class LocalStack:
    """A running local stack and what the tests need to use it."""

    env: dict[str, str]
    stack: local.Stack
    settings: Settings
    app: CloudworkerCelery
    tasks: TaskSet

    def client(self, service: str) -> Any:
        return boto3.session.Session().client(
            service, endpoint_url=self.env["AWS_ENDPOINT_URL"], region_name=self.settings.region
        )

    def run(
        self,
        *args: str,
        timeout: float = 120,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python ARGS`` in a new process, with the stack's environment plus ``env``."""
        return subprocess.run(
            [sys.executable, *args],
            cwd=cwd or ROOT,
            env={**os.environ, **self.env, "PYTHONPATH": str(ROOT), **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def cli(
        self, *args: str, timeout: float = 120, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m client ARGS`` against the stack."""
        return self.run("-m", "client", *args, timeout=timeout, cwd=cwd)

    def worker_log(self, name: str = "worker1") -> str:
        return self.stack.log_file(name).read_text(errors="replace")

    def worker_alive(self, name: str = "worker1") -> bool:
        return self.stack.pid(name) is not None

    def queue_url(self, name: str) -> str:
        url: str = self.client("sqs").get_queue_url(QueueName=name)["QueueUrl"]
        return url

    def queue_depth(self, name: str) -> int:
        """Messages in queue ``name``, visible or in flight."""
        attributes = self.client("sqs").get_queue_attributes(
            QueueUrl=self.queue_url(name),
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return sum(int(v) for v in attributes.values())

    def wait_for_depth(self, name: str, expected: int, timeout: float = 30) -> bool:
        """Wait until queue ``name`` holds ``expected`` messages (true, or AssertionError)."""
        return eventually(
            lambda: self.queue_depth(name) == expected,
            timeout=timeout,
            interval=0.2,
            what=lambda: f"{name} holds {expected} message(s), not {self.queue_depth(name)}",
        )

    def response_queues(self) -> list[str]:
        sqs = self.client("sqs")
        urls = sqs.list_queues(QueueNamePrefix=self.settings.response_queue_prefix)
        return [u.rsplit("/", 1)[-1] for u in urls.get("QueueUrls", [])]


#: The test stack's settings beside the local stack's own (deploy/local.py): a short long
#: poll, since a stopping worker waits for the one in flight (the tests stop many).
TEST_SETTINGS = {"CLOUDWORKER_WAIT_SECONDS": "2"}


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = local.Stack(tmp_path_factory.mktemp("run"))
    saved = dict(os.environ)
    app: CloudworkerCelery | None = None
    try:
        os.environ.update(TEST_SETTINGS)
        env = local.up(stack, workers=1, concurrency=2, flower=False)
        os.environ.update(env)
        settings = Settings.from_env(env)
        app = create_app(settings)
        yield LocalStack(env, stack, settings, app, register(app))
    finally:
        if app is not None:
            app.services.mailbox.close()  # while the endpoint still runs
        local.down(stack)
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def stack(local_stack: LocalStack) -> LocalStack:
    """The session's stack, with its worker checked alive before each test."""
    assert local_stack.worker_alive(), local_stack.worker_log()[-3000:]
    return local_stack


@dataclasses.dataclass
class ProxiedWorker:
    """A worker of its own, reaching the endpoint through a fault proxy, and a client of it."""

    proxy: FaultProxy
    app: CloudworkerCelery
    tasks: TaskSet


@contextlib.contextmanager
def proxied_worker(
    stack: LocalStack,
    name: str,
    queue: str,
    *,
    concurrency: int,
    include: tuple[str, ...] = (),
    **settings: Any,
) -> Iterator[ProxiedWorker]:
    """Start worker ``name`` on task queue ``queue`` (provisioned here) behind a FaultProxy.

    Only the worker goes through the proxy; the client this yields talks to the
    endpoint directly. ``settings`` override the stack's (and the worker's environment);
    ``include`` names more modules the worker loads (``--include``).
    """
    settings_here = dataclasses.replace(stack.settings, task_queue=queue, **settings)
    provision(settings_here, sqs=stack.client("sqs"), s3=stack.client("s3"))
    with FaultProxy(stack.env["AWS_ENDPOINT_URL"]) as proxy:
        env = {
            **os.environ,
            **stack.env,
            "AWS_ENDPOINT_URL": proxy.url,
            "CLOUDWORKER_TASK_QUEUE": queue,
            "CLOUDWORKER_WAIT_SECONDS": "5",
            "CLOUDWORKER_INBOX_ENABLED": "false",
            **{f"CLOUDWORKER_{key.upper()}": str(value) for key, value in settings.items()},
            "PYTHONPATH": str(ROOT),
        }
        command = local.worker_command(name, concurrency)
        if include:
            command.append(f"--include={','.join(include)}")
        local.start_process(stack.stack, name, command, env)
        app = create_app(settings_here)
        try:
            yield ProxiedWorker(proxy, app, register(app))
        finally:
            app.services.mailbox.close()
            local.stop_process(stack.stack, name)
