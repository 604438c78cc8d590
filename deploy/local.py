"""The local stack: an AWS endpoint and a worker on this machine (``make up``/``make down``).

``up`` starts a local AWS endpoint (a real HTTP server speaking SQS, S3 and
SNS: moto, or ministack with ``CLOUDWORKER_LOCAL_ENDPOINT=ministack``; see
:mod:`deploy.endpoints`) on loopback, provisions the queues and the bucket through
:mod:`deploy.provision`, starts one worker and Flower (on loopback, with a
generated password: :mod:`deploy.flower`) in the background and writes
``.run/env``: ``export NAME=value`` lines with everything a shell needs to use
the stack, readable only by its owner since it holds Flower's password. Logs
and pid files live in ``.run/`` too. ``up`` is idempotent: it starts only what
is not running, and keeps Flower's port and password. ``down`` stops exactly
what ``up`` started.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from cloudworker.settings import PREFIX, Settings
from cloudworker.topics import SNSTopicService
from deploy.endpoints import ENDPOINT_VARIABLE, chosen
from deploy.flower import PASSWORD_VARIABLE, USER_VARIABLE, flower_command
from deploy.provision import provision

__all__ = [
    "ENDPOINT_PROCESS",
    "READY_MARK",
    "Stack",
    "down",
    "log_size",
    "settings_from",
    "start_process",
    "stop_process",
    "up",
    "wait_for_log",
    "worker_command",
]

ROOT = Path(__file__).resolve().parent.parent
#: The name of the endpoint's process in the stack (pid and log file).
ENDPOINT_PROCESS = "endpoint"
#: What a Celery worker logs once it consumes tasks and answers remote control.
READY_MARK = " ready."
#: Flower's user name on the local stack (its password is generated).
FLOWER_USER = "admin"
#: The local stack's fixed settings; a short visibility timeout makes redelivery observable.
LOCAL_SETTINGS = {
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    # The local endpoints accept any key; these are placeholders, not credentials.
    "AWS_ACCESS_KEY_ID": "local-testing",
    "AWS_SECRET_ACCESS_KEY": "local-testing",
    "CLOUDWORKER_REGION": "us-east-1",
    "CLOUDWORKER_BUCKET": "cloudworker-local",
    "CLOUDWORKER_QUEUE_PREFIX": "cloudworker-local-",
    "CLOUDWORKER_TASK_QUEUE": "tasks",
    "CLOUDWORKER_VISIBILITY_TIMEOUT": "30",
    # `make down` gives a worker 20 s (stop_process): running tasks get 10 of them.
    "CLOUDWORKER_SHUTDOWN_GRACE": "10",
}


@dataclass(frozen=True)
class Stack:
    """Where a local stack keeps its state."""

    run_dir: Path

    @property
    def env_file(self) -> Path:
        return self.run_dir / "env"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    def pid(self, name: str) -> int | None:
        """The pid of process ``name`` if it is running."""
        try:
            pid = int(self.pid_file(name).read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid if not _is_zombie(pid) else None

    def read_env(self) -> dict[str, str]:
        """The variables of ``.run/env``."""
        env: dict[str, str] = {}
        if not self.env_file.exists():
            return env
        for line in self.env_file.read_text().splitlines():
            if line.startswith("export ") and "=" in line:
                name, _, value = line[len("export ") :].partition("=")
                env[name] = shlex.split(value)[0] if value else ""
        return env


def default_stack() -> Stack:
    return Stack(Path(os.environ.get("CLOUDWORKER_RUN_DIR", ROOT / ".run")))


def up(
    stack: Stack | None = None,
    *,
    workers: int = 1,
    concurrency: int = 2,
    flower: bool = True,
    endpoint: str | None = None,
    app: str | None = None,
) -> dict[str, str]:
    """Start what is not running; return the stack's environment.

    ``endpoint``: the AWS endpoint the workers and Flower started now use instead
    of the stack's own (a proxy in front of it, to count or disturb their requests).
    ``app``: the module of a user's Celery app the workers run (``celery -A app``),
    from the current directory, instead of this repository's reference app.
    """
    stack = stack or default_stack()
    stack.run_dir.mkdir(parents=True, exist_ok=True)
    previous = stack.read_env()
    env = {**LOCAL_SETTINGS, **settings_from(os.environ)}
    port = _port_of(previous.get("AWS_ENDPOINT_URL", ""))
    kind = chosen(os.environ)
    restarted = False
    running = stack.pid(ENDPOINT_PROCESS) is not None
    if running and previous.get(ENDPOINT_VARIABLE, "moto") != kind.name:
        stop_process(stack, ENDPOINT_PROCESS)  # another kind of endpoint was asked for
        running = False
    if not running or port is None:
        port = port if port is not None and _port_free(port) else _free_port()
        server_env = {**os.environ, **kind.environment(port)}
        start_process(stack, ENDPOINT_PROCESS, kind.command(port, os.environ), server_env)
        restarted = True
    env[ENDPOINT_VARIABLE] = kind.name
    env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    _wait_for_endpoint(env, stack)
    settings = Settings.from_env(env)
    provision(settings, sqs=_client("sqs", env), s3=_client("s3", env))
    if flower:
        env.update(_flower_settings(previous))
    _write_env(stack, env)
    process_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    worker_env, worker_dir = process_env, ROOT
    if app is not None:  # the user's project, from where they are, with none of ours
        worker_dir = Path.cwd()
        worker_env = {**process_env, "PYTHONPATH": str(worker_dir)}
    if endpoint is not None:
        process_env["AWS_ENDPOINT_URL"] = endpoint
    names = [f"worker{index}" for index in range(1, workers + 1)] + (["flower"] if flower else [])
    starting: list[tuple[str, int]] = []
    for name in names:
        if restarted and stack.pid(name) is not None:
            stop_process(stack, name)
        if stack.pid(name) is not None:
            continue
        if name == "flower":
            flower_port = _port_of(env["CLOUDWORKER_FLOWER_URL"]) or _free_port()
            receivers = _event_receivers(env)
            start_process(stack, name, flower_command("127.0.0.1", flower_port), process_env)
            _wait_for_port(flower_port, stack, name)
            _wait_for_new_event_receiver(env, receivers, stack)
        else:
            offset = log_size(stack, name)
            command = worker_command(name, concurrency, app or REFERENCE_APP)
            start_process(stack, name, command, worker_env, cwd=worker_dir)
            starting.append((name, offset))
    for name, offset in starting:
        # Ready: consuming tasks and answering remote control (`celery inspect ping`).
        wait_for_log(stack, name, offset, READY_MARK)
    return env


def settings_from(environ: Mapping[str, str]) -> dict[str, str]:
    """cloudworker's settings set in ``environ``: they override the local stack's own.

    ``CLOUDWORKER_WAIT_SECONDS=2 make up`` gives the stack a short long poll (a worker
    stops within one: the test stacks use this), written to ``.run/env`` like the rest.
    Only the variables of :class:`config.Settings` are taken, never Flower's or AWS's.
    """
    names = {PREFIX + field.name.upper() for field in fields(Settings)}
    return {name: value for name, value in environ.items() if name in names}


def _flower_settings(previous: Mapping[str, str]) -> dict[str, str]:
    """Flower's URL and credentials: the previous ones if any, else a new port and password."""
    url = previous.get("CLOUDWORKER_FLOWER_URL", "")
    port = _port_of(url)
    password = previous.get(PASSWORD_VARIABLE, "")
    return {
        "CLOUDWORKER_FLOWER_URL": url if port is not None else f"http://127.0.0.1:{_free_port()}",
        USER_VARIABLE: previous.get(USER_VARIABLE) or FLOWER_USER,
        PASSWORD_VARIABLE: password or secrets.token_urlsafe(18),
    }


#: The app the local workers run unless told another (``--app``).
REFERENCE_APP = "tasks"


def worker_command(name: str, concurrency: int, app: str = REFERENCE_APP) -> list[str]:
    """The command line of a local worker."""
    return [
        sys.executable, "-m", "celery", "-A", app, "worker",
        "--loglevel=INFO", f"--concurrency={concurrency}", f"--hostname={name}@%h",
    ]  # fmt: skip


def down(stack: Stack | None = None) -> list[str]:
    """Stop every process ``up`` started (workers first); return their names."""
    stack = stack or default_stack()
    if not stack.run_dir.exists():
        return []
    names = sorted(p.stem for p in stack.run_dir.glob("*.pid"))
    # The endpoint last ("moto" is its name in a stack started by an older version).
    endpoints = (ENDPOINT_PROCESS, "moto")
    ordered = [n for n in names if n not in endpoints] + [n for n in names if n in endpoints]
    for name in ordered:
        stop_process(stack, name)
    return ordered


def start_process(
    stack: Stack, name: str, command: list[str], env: Mapping[str, str], *, cwd: Path = ROOT
) -> None:
    """Start ``command`` as process ``name`` of the stack: own session, log and pid file."""
    with stack.log_file(name).open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack.pid_file(name).write_text(f"{process.pid}\n")


def stop_process(stack: Stack, name: str, grace: float = 20.0) -> None:
    """Stop process ``name`` as systemd's ``KillMode=mixed`` does, then its group.

    SIGTERM goes to the main process only, so a worker's warm shutdown lets its
    running tasks finish (cloudworker/worker/shutdown.py) instead of losing its pool at once;
    whatever is left of the process group after ``grace`` seconds gets SIGKILL.
    """
    pid = stack.pid(name)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and stack.pid(name) is not None:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    stack.pid_file(name).unlink(missing_ok=True)


def log_size(stack: Stack, name: str) -> int:
    """The size of the log of process ``name``: where its next lines will start."""
    path = stack.log_file(name)
    return path.stat().st_size if path.exists() else 0


def wait_for_log(stack: Stack, name: str, offset: int, mark: str, timeout: float = 90.0) -> None:
    """Wait until ``mark`` appears in the log of process ``name`` past ``offset``."""
    path = stack.log_file(name)

    def logged() -> bool:
        if not path.exists():
            return False
        with path.open("rb") as handle:
            handle.seek(offset)
            return mark.encode() in handle.read()

    _wait_until(logged, stack, name, f"{name} did not log {mark!r}", timeout)


def _wait_until(
    done: Callable[[], bool], stack: Stack, name: str, failure: str, timeout: float
) -> None:
    """Poll ``done`` until it holds; fail with ``name``'s log if it dies or time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        if stack.pid(name) is None:
            break
        time.sleep(0.2)
    path = stack.log_file(name)
    tail = path.read_text(errors="replace")[-3000:] if path.exists() else ""
    raise RuntimeError(f"{failure}:\n{tail}")


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _write_env(stack: Stack, env: Mapping[str, str]) -> None:
    lines = ["# The local cloudworker stack; `. .run/env` to use it from a shell."]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())]
    stack.env_file.touch(mode=0o600)
    stack.env_file.chmod(0o600)  # it holds Flower's password
    stack.env_file.write_text("\n".join(lines) + "\n")


def _client(service: str, env: Mapping[str, str]) -> object:
    return boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    ).client(
        service,
        endpoint_url=env["AWS_ENDPOINT_URL"],
        config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3}),
    )


def _wait_for_endpoint(env: Mapping[str, str], stack: Stack, timeout: float = 60.0) -> None:
    """Wait until the endpoint answers an AWS request (SQS ``ListQueues``), whatever it is."""
    sqs: Any = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    ).client(
        "sqs",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        config=Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 0}),
    )

    def answers() -> bool:
        try:
            sqs.list_queues(MaxResults=1)
        except (BotoCoreError, ClientError):
            return False
        return True

    failure = f"the local AWS endpoint did not start at {env['AWS_ENDPOINT_URL']}"
    _wait_until(answers, stack, ENDPOINT_PROCESS, failure, timeout)


def _wait_for_port(port: int, stack: Stack, name: str, timeout: float = 30.0) -> None:
    failure = f"{name} did not start listening on port {port}"
    _wait_until(lambda: not _port_free(port), stack, name, failure, timeout)


def _event_receivers(env: Mapping[str, str]) -> set[str]:
    """The queues subscribed to the events topic (each is one receiver: Flower, ...)."""
    topic = f"{env['CLOUDWORKER_QUEUE_PREFIX']}celeryev"
    subscriptions = SNSTopicService(_client("sns", env)).queue_subscriptions(topic)
    return {s.queue_name for s in subscriptions if s.topic_arn.rsplit(":", 1)[-1] == topic}


def _wait_for_new_event_receiver(
    env: Mapping[str, str], before: set[str], stack: Stack, timeout: float = 60.0
) -> None:
    """Wait until Flower receives events: tasks run before that would be missing from it."""
    failure = "Flower did not subscribe to the worker events"
    _wait_until(lambda: bool(_event_receivers(env) - before), stack, "flower", failure, timeout)


def _port_of(url: str) -> int | None:
    _, _, port = url.rpartition(":")
    return int(port) if port.isdigit() else None


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
