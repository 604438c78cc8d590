"""The benchmark's stack: one local endpoint, two counting proxies, one worker at a time.

* The endpoint is ministack by default (``CLOUDWORKER_LOCAL_ENDPOINT``, or ``--endpoint``),
  started and provisioned by :func:`deploy.local.up`, the code behind ``make up``.
* Two :class:`bench.proxy.ProxyProcess` in front of it: the workers' (their
  ``AWS_ENDPOINT_URL``) and the clients' (:attr:`BenchStack.process_env`). Each counts the
  requests it forwards by operation and adds the latency model the run asks for
  (:meth:`BenchStack.set_latency`), so the requests of a run are counted at the proxies,
  apart for the client and the workers, on any endpoint.
* Exactly one worker runs, the one of the system and concurrency being measured: on a
  2-core machine an idle worker of the other system would still take CPU and long polls.
  Switching stops the other, starts this one, waits until it consumes, then waits for its
  task queue to be empty so a phase never inherits the previous one's work.

The stack's own requests (draining, readiness) go straight to the endpoint, not through a
proxy, so they are never counted. :meth:`BenchStack.down` stops everything started, also
after an error.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from bench import DEFAULT_ENDPOINT, use_endpoint
from bench.proxy import ProxyProcess
from bench.stock_app import READY_MARK as STOCK_READY
from cloudworker.settings import Settings
from deploy import local
from deploy.provision import provision

__all__ = ["DEFAULT_ENDPOINT", "BenchStack", "Worker"]

ROOT = Path(__file__).resolve().parent.parent
CLOUDWORKER_WORKER = "worker1"
STOCK_WORKER = "stock-worker"
#: Seconds an idle worker gets to stop before it is killed (its task queue is empty).
STOP_GRACE = 3.0
#: Monitoring off, as ``bench.monitoring`` names it.
MONITORING_OFF = {"CLOUDWORKER_EVENTS": "false", "CLOUDWORKER_REMOTE_CONTROL": "false"}


@dataclass(frozen=True)
class Worker:
    """Which worker runs: its system, its pool size and any settings of its own."""

    system: str
    concurrency: int
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return CLOUDWORKER_WORKER if self.system == "cloudworker" else STOCK_WORKER

    @property
    def key(self) -> str:
        """``cloudworker-c2``, ``cloudworker-c2-off`` (monitoring off), ``stock-c4``."""
        return f"{self.system}-c{self.concurrency}" + ("-off" if self.env else "")

    @property
    def queue_env(self) -> dict[str, str]:
        """A task queue of this configuration's own, for its worker and its clients.

        Why: a worker stopped at a switch may leave a long poll waiting at the endpoint (up
        to 20 s); on a queue shared with the next worker, that orphaned poll would take the
        next task and hide it for the visibility timeout. A quick run lost 30 s that way.
        """
        if self.system == "cloudworker":
            return {"CLOUDWORKER_TASK_QUEUE": f"tasks-{self.key}"}
        return {"BENCH_STOCK_QUEUE_PREFIX": f"stock-{self.key}-"}

    @property
    def task_queue(self) -> str:
        """The SQS name of this configuration's task queue."""
        if self.system == "cloudworker":
            env = {**local.LOCAL_SETTINGS, **self.queue_env}
            return Settings.from_env(env).task_queue_name
        return f"{self.queue_env['BENCH_STOCK_QUEUE_PREFIX']}celery"

    @property
    def label(self) -> str:
        extra = ", monitoring off" if self.env == MONITORING_OFF else ""
        return f"{self.system} -c {self.concurrency}{extra}"

    def command(self) -> list[str]:
        if self.system == "cloudworker":
            return local.worker_command(CLOUDWORKER_WORKER, self.concurrency)
        return [
            sys.executable, "-m", "celery", "-A", "bench.stock_app", "worker",
            "-c", str(self.concurrency), "-P", "prefork", "-l", "WARNING",
        ]  # fmt: skip

    @property
    def ready_mark(self) -> str:
        return local.READY_MARK if self.system == "cloudworker" else STOCK_READY


class BenchStack:
    """The endpoint, the two proxies, and the worker being measured."""

    def __init__(self, run_dir: Path, endpoint: str = DEFAULT_ENDPOINT) -> None:
        self.stack = local.Stack(run_dir)
        if run_dir.exists():
            # A previous run that was killed hard may have left its processes behind.
            local.down(self.stack)
            shutil.rmtree(run_dir)
        self.endpoint = endpoint
        self.env: dict[str, str] = {}
        self.active: Worker | None = None
        self.worker_proxy: ProxyProcess | None = None
        self.client_proxy: ProxyProcess | None = None
        self.logs_seen: dict[str, str] = {}

    @property
    def endpoint_log(self) -> Path:
        return self.stack.log_file(local.ENDPOINT_PROCESS)

    @property
    def process_env(self) -> dict[str, str]:
        """A client's environment: the stack's, with the endpoint behind the client proxy."""
        assert self.client_proxy is not None
        return {
            **os.environ,
            **self.env,
            **(self.active.queue_env if self.active is not None else {}),
            "AWS_ENDPOINT_URL": self.client_proxy.url,
            "PYTHONPATH": str(ROOT),
        }

    def up(self) -> None:
        """Start the endpoint, provision cloudworker's queues and bucket, start the proxies."""
        use_endpoint(self.endpoint)  # deploy.local reads it from os.environ
        self.env = local.up(self.stack, workers=0, flower=False)
        base = {**os.environ, "PYTHONPATH": str(ROOT)}
        upstream = self.env["AWS_ENDPOINT_URL"]
        self.worker_proxy = ProxyProcess(self.stack, "proxy-workers", upstream, seed=1)
        self.client_proxy = ProxyProcess(self.stack, "proxy-client", upstream, seed=2)
        self.worker_proxy.start(base)
        self.client_proxy.start(base)

    def set_latency(self, profile: str) -> None:
        """The latency model both proxies add from now on (``none``, ``aws``)."""
        for proxy in self._proxies():
            proxy.set_latency(profile)

    def proxy_controls(self) -> dict[str, str]:
        """The control URLs of the proxies, by whose requests they forward."""
        assert self.worker_proxy is not None and self.client_proxy is not None
        return {"worker": self.worker_proxy.control, "client": self.client_proxy.control}

    def use(self, worker: Worker) -> None:
        """Make ``worker`` the only one running, ready, with an empty task queue."""
        assert self.worker_proxy is not None
        if self.active != worker:
            if self.active is not None:
                self._keep_log(self.active)
                # Idle, its queue drained: nothing to wait for but its long polls.
                local.stop_process(self.stack, self.active.name, grace=STOP_GRACE)
            env = {
                **os.environ,
                **self.env,
                **worker.env,
                **worker.queue_env,
                "AWS_ENDPOINT_URL": self.worker_proxy.url,
                "PYTHONPATH": str(ROOT),
            }
            if worker.system == "cloudworker":
                settings = Settings.from_env({**self.env, **worker.queue_env})
                provision(settings, sqs=self._sqs(), s3=self._client("s3"))
            offset = local.log_size(self.stack, worker.name)
            local.start_process(self.stack, worker.name, worker.command(), env)
            local.wait_for_log(self.stack, worker.name, offset, worker.ready_mark, timeout=90.0)
            self.active = worker
        self.drain()

    def drain(self, timeout: float = 180.0) -> None:
        """Wait until the active worker's task queue holds no message, visible or in flight."""
        assert self.active is not None
        url = self._queue_url(self.active.task_queue)
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
            time.sleep(0.3)
        raise RuntimeError(f"{self.active.task_queue} did not drain in {timeout:.0f} s")

    def process_groups(self) -> dict[str, int]:
        """Process group ids of the endpoint, the proxies and the active worker.

        Each was started in a session of its own, so its pid is its process group id.
        """
        names = {
            "endpoint": local.ENDPOINT_PROCESS,
            "proxy-workers": "proxy-workers",
            "proxy-client": "proxy-client",
        }
        if self.active is not None:
            names["worker"] = self.active.name
        groups = {key: self.stack.pid(name) for key, name in names.items()}
        return {key: pid for key, pid in groups.items() if pid is not None}

    def worker_logs(self) -> dict[str, str]:
        """The text of every worker log of the run (cloudworker's and stock's)."""
        if self.active is not None:
            self._keep_log(self.active)
        return dict(self.logs_seen)

    def down(self) -> list[str]:
        """Stop every process of the run (workers first, then proxies, then the endpoint)."""
        if self.active is not None:
            self._keep_log(self.active)
            local.stop_process(self.stack, self.active.name, grace=STOP_GRACE)
        self.active = None
        return local.down(self.stack)

    def _proxies(self) -> list[ProxyProcess]:
        return [proxy for proxy in (self.worker_proxy, self.client_proxy) if proxy is not None]

    def _keep_log(self, worker: Worker) -> None:
        path = self.stack.log_file(worker.name)
        if path.exists():
            self.logs_seen[worker.system] = path.read_text(errors="replace")

    def _queue_url(self, name: str) -> str | None:
        try:
            url: str = self._sqs().get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError:
            return None
        return url

    def _sqs(self) -> Any:
        return self._client("sqs")

    def _client(self, service: str) -> Any:
        """A client of the endpoint itself (not through a proxy: never counted)."""
        return boto3.session.Session(
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_REGION"],
        ).client(service, endpoint_url=self.env["AWS_ENDPOINT_URL"])
