"""The benchmark's stack: one moto server, and exactly one system's worker at a time.

Why one worker at a time: moto is a single Python process on a 2-core machine, so an idle
worker of the other system would still take CPU (and long polls) from the one measured.
Switching stops the other worker, starts this one, waits until it consumes, then waits for
this system's task queue to be empty so a phase never inherits the previous one's work.

The processes are started with :mod:`deploy.local`'s helpers, so they are the same ones
``make up`` runs; :meth:`BenchStack.down` stops everything started, also after an error.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from bench.stock_app import QUEUE_NAME as STOCK_QUEUE
from bench.stock_app import READY_MARK as STOCK_READY
from config import Settings
from deploy import local

__all__ = ["BenchStack"]

ROOT = Path(__file__).resolve().parent.parent
CLOUDWORKER_WORKER = "worker1"
STOCK_WORKER = "stock-worker"
CONCURRENCY = 2
STOCK_COMMAND = [
    sys.executable, "-m", "celery", "-A", "bench.stock_app", "worker",
    "-c", str(CONCURRENCY), "-P", "prefork", "-l", "WARNING",
]  # fmt: skip


class BenchStack:
    """moto plus the worker of the system being measured."""

    def __init__(self, run_dir: Path) -> None:
        self.stack = local.Stack(run_dir)
        if run_dir.exists():
            # A previous run that was killed hard may have left its processes behind.
            local.down(self.stack)
            shutil.rmtree(run_dir)  # its logs: counting needs a fresh moto.log
        self.env: dict[str, str] = {}
        self.active: str | None = None

    @property
    def moto_log(self) -> Path:
        return self.stack.log_file(local.ENDPOINT_PROCESS)

    @property
    def process_env(self) -> dict[str, str]:
        """What every process of the run gets: this environment plus the stack's."""
        return {**os.environ, **self.env, "PYTHONPATH": str(ROOT)}

    def up(self) -> None:
        """Start moto, provision cloudworker's queues and bucket, start cloudworker's worker."""
        self.env = local.up(self.stack, workers=1, concurrency=CONCURRENCY, flower=False)
        self.active = "cloudworker"

    def use(self, system: str) -> None:
        """Make ``system``'s worker the only one running, ready, with an empty task queue."""
        if self.active != system:
            other = STOCK_WORKER if system == "cloudworker" else CLOUDWORKER_WORKER
            local.stop_process(self.stack, other)
            name, command, mark = self._worker(system)
            offset = local.log_size(self.stack, name)
            local.start_process(self.stack, name, command, self.process_env)
            local.wait_for_log(self.stack, name, offset, mark, timeout=60.0)
            self.active = system
        self.drain(system)

    def drain(self, system: str, timeout: float = 180.0) -> None:
        """Wait until the system's task queue holds no message, visible or in flight."""
        url = self._queue_url(system)
        if url is None:
            return  # stock's queue does not exist before its first message
        sqs = self._sqs()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            attributes = sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            if all(int(value) == 0 for value in attributes.values()):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the {system} task queue did not drain in {timeout:.0f} s")

    def process_groups(self, system: str) -> dict[str, int]:
        """moto's and ``system``'s worker's process group ids (each leads its session)."""
        name = CLOUDWORKER_WORKER if system == "cloudworker" else STOCK_WORKER
        groups = {"moto": self.stack.pid(local.ENDPOINT_PROCESS), "worker": self.stack.pid(name)}
        return {key: pid for key, pid in groups.items() if pid is not None}

    def worker_log(self, system: str) -> str:
        name = CLOUDWORKER_WORKER if system == "cloudworker" else STOCK_WORKER
        path = self.stack.log_file(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def down(self) -> list[str]:
        """Stop every process of the run (workers first, then moto)."""
        self.active = None
        return local.down(self.stack)

    def _worker(self, system: str) -> tuple[str, list[str], str]:
        if system == "cloudworker":
            command = local.worker_command(CLOUDWORKER_WORKER, CONCURRENCY)
            return CLOUDWORKER_WORKER, command, " ready."
        return STOCK_WORKER, STOCK_COMMAND, STOCK_READY

    def _queue_url(self, system: str) -> str | None:
        if system == "cloudworker":
            name = Settings.from_env(self.env).task_queue_name
        else:
            name = STOCK_QUEUE
        try:
            url: str = self._sqs().get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError:
            return None
        return url

    def _sqs(self) -> Any:
        return boto3.session.Session(
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_REGION"],
        ).client("sqs", endpoint_url=self.env["AWS_ENDPOINT_URL"])
