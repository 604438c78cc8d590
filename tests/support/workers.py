"""Test workers on a queue of their own, with the slow test task (and any other module) loaded.

Reliability and shutdown tests start, stop and kill workers; they do it on their
own queue (provisioned with the visibility timeout the test needs) so that the
session's shared worker never takes their tasks.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path
from typing import Any

from cloudworker.application import CloudworkerCelery, create_app
from deploy import local
from deploy.provision import provision

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Workers:
    """Worker processes serving ``queue``, and an app that sends to it."""

    stack: local.Stack
    app: CloudworkerCelery
    env: dict[str, str]

    @classmethod
    def on_queue(cls, shared: Any, queue: str, *, visibility: int, wait_seconds: int) -> Workers:
        """Provision ``queue`` on the session's stack ``shared`` (a ``LocalStack``)."""
        settings = dataclasses.replace(
            shared.settings, task_queue=queue, visibility_timeout=visibility
        )
        provision(settings, sqs=shared.client("sqs"), s3=shared.client("s3"))
        env = {
            **os.environ,
            **shared.env,
            "CLOUDWORKER_TASK_QUEUE": queue,
            "CLOUDWORKER_VISIBILITY_TIMEOUT": str(visibility),
            "CLOUDWORKER_WAIT_SECONDS": str(wait_seconds),
            "CLOUDWORKER_INBOX_ENABLED": "false",
            "PYTHONPATH": str(ROOT),
        }
        return cls(shared.stack, create_app(settings), env)

    def start(
        self,
        name: str,
        *,
        wait_ready: bool = False,
        env: dict[str, str] | None = None,
        include: tuple[str, ...] = (),
    ) -> None:
        """Start worker ``name``; ``include`` names more modules it loads (``--include``)."""
        offset = local.log_size(self.stack, name)
        modules = ",".join(("tests.support.slow_tasks", *include))
        command = [*local.worker_command(name, 2), f"--include={modules}"]
        local.start_process(self.stack, name, command, {**self.env, **(env or {})})
        if wait_ready:
            local.wait_for_log(self.stack, name, offset, "ready.")

    def stop(self, name: str) -> None:
        local.stop_process(self.stack, name)

    def kill(self, name: str) -> None:
        pid = self.stack.pid(name)
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)
        self.stack.pid_file(name).unlink()

    def slow(self, seconds: float, marker: Path, **options: object) -> Any:
        return self.app.send_task("tests.slow", args=[seconds, str(marker)], **options)

    def close(self, *names: str) -> None:
        self.app.services.mailbox.close()
        for name in names:
            self.stop(name)
