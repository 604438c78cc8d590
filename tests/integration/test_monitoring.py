"""Monitoring over SQS + SNS with real processes: Flower, celery inspect/control/events.

Flower is started the way ``make up`` starts it (:func:`deploy.local.up`), on
the session's stack; ``celery`` commands run as subprocesses with the stack's
environment, exactly as a user types them.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import states
from celery.exceptions import TaskRevokedError

from cloudworker.topics import SNSTopicService
from deploy import local
from deploy.flower import PASSWORD_VARIABLE, USER_VARIABLE, flower_command
from tests.integration.conftest import ROOT, LocalStack
from tests.support.waiting import eventually
from tests.support.webdriver import BROWSER, DRIVER, WebDriver

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Flower:
    url: str
    user: str
    password: str

    def get(self, path: str, *, auth: tuple[str, str] | None = None) -> tuple[int, Any]:
        """``GET path`` with ``auth`` (default: the right credentials); status and JSON body."""
        user, password = auth if auth is not None else (self.user, self.password)
        request = urllib.request.Request(self.url + path)
        if user or password:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            return error.code, None
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode(errors="replace")


@pytest.fixture(scope="module")
def flower(local_stack: LocalStack) -> Iterator[Flower]:
    env = local.up(local_stack.stack, workers=1, concurrency=2, flower=True)  # as `make up`
    try:
        yield Flower(env["CLOUDWORKER_FLOWER_URL"], env[USER_VARIABLE], env[PASSWORD_VARIABLE])
    finally:
        local.stop_process(local_stack.stack, "flower")


def celery(stack: LocalStack, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``celery -A tasks ARGS`` against the stack."""
    return stack.run("-m", "celery", "-A", "tasks", *args, timeout=timeout)


def receiver_queues(stack: LocalStack) -> set[str]:
    urls = stack.client("sqs").list_queues(QueueNamePrefix=stack.settings.receiver_queue_prefix)
    return {url.rsplit("/", 1)[-1] for url in urls.get("QueueUrls", [])}


def subscribed_queues(stack: LocalStack) -> set[str]:
    subscriptions = SNSTopicService(stack.client("sns")).queue_subscriptions(
        stack.settings.queue_prefix
    )
    return {s.queue_name for s in subscriptions}


def start(
    stack: LocalStack, command: list[str], env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start ``command`` in the background with the stack's environment plus ``env``."""
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **stack.env, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture(autouse=True)
def interruptible_children() -> Iterator[None]:
    """The receivers started here stop on SIGINT, whatever this process inherited.

    A shell without job control starts a background command (``make test &``) with
    SIGINT ignored; its children inherit that, and a Python started so never raises
    KeyboardInterrupt, so ``celery events`` would outlive the SIGINT these tests send.
    A handler of ours is not inherited: the children start with the default.
    """
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_flower_lists_the_tasks_with_state_arguments_result_and_runtime(
    stack: LocalStack, flower: Flower
) -> None:
    sent = {stack.tasks.compute_stats.delay([7, 1, 9, n]).id: n for n in (100, 200)}
    for task_id in sent:
        assert stack.app.AsyncResult(task_id).get(timeout=60)["count"] == 4

    def listed() -> dict[str, Any]:
        status, tasks = flower.get("/api/tasks")
        assert status == 200
        done = {i: t for i, t in tasks.items() if i in sent and t["state"] == states.SUCCESS}
        return done if len(done) == len(sent) else {}

    tasks = eventually(listed, interval=0.5, what="Flower lists both tasks")
    assert set(tasks) == set(sent)
    for task_id, n in sent.items():
        task = tasks[task_id]
        assert task["name"] == "tasks.compute_stats"
        assert task["args"] == f"([7, 1, 9, {n}],)"
        assert "'median': 8," in task["result"] and "'count': 4" in task["result"]
        assert task["runtime"] > 0
        assert task["worker"].startswith("worker1@")


def test_flower_shows_the_worker_online(stack: LocalStack, flower: Flower) -> None:
    def online() -> dict[str, bool]:
        status, workers = flower.get("/api/workers?status=1")
        assert status == 200
        return {name: up for name, up in workers.items() if up}

    workers = eventually(online, interval=0.5, what="Flower shows a worker online")
    assert [name.split("@")[0] for name in workers] == ["worker1"]


def test_flower_reports_queue_lengths_from_sqs(stack: LocalStack, flower: Flower) -> None:
    delayed = [stack.tasks.compute_stats.apply_async(([1],), countdown=300) for _ in range(3)]
    try:
        status, body = flower.get("/api/queues/length")
        assert status == 200
        lengths = {q["name"]: q for q in body["active_queues"]}
        assert lengths["tasks"]["messages"] >= 3
        status, page = flower.get("/broker")
        assert status == 200 and "tasks" in page and "not supported" not in page
    finally:
        for result in delayed:
            result.revoke()


@pytest.mark.parametrize(
    "auth", [("", ""), ("admin", "wrong"), ("nobody", "x")], ids=["none", "bad-password", "user"]
)
def test_flower_refuses_requests_without_the_right_password(
    flower: Flower, auth: tuple[str, str]
) -> None:
    # /metrics and /healthcheck too: Flower 2.2 serves them to anyone (deploy/flower.py).
    for path in ("/api/tasks", "/api/workers", "/", "/tasks", "/metrics", "/healthcheck"):
        status, _ = flower.get(path, auth=auth)
        assert status == 401, path
    assert flower.get("/healthcheck") == (200, "OK")
    status, metrics = flower.get("/metrics")
    assert status == 200 and "flower_events_total" in metrics


def test_flower_is_not_started_without_credentials(stack: LocalStack) -> None:
    result = stack.run(
        *flower_command("127.0.0.1", 1)[1:],
        env={USER_VARIABLE: "", PASSWORD_VARIABLE: "", "FLOWER_UNAUTHENTICATED_API": "true"},
        timeout=60,
    )
    assert result.returncode == 2
    assert "only served with a password" in result.stderr


def test_inspect_ping_gets_a_pong(stack: LocalStack) -> None:
    result = celery(stack, "inspect", "ping")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "worker1@" in result.stdout and "pong" in result.stdout
    assert "1 node online" in result.stdout


def test_inspect_registered_and_active(stack: LocalStack) -> None:
    registered = celery(stack, "inspect", "registered", "--json")
    assert registered.returncode == 0, registered.stderr
    (names,) = json.loads(registered.stdout).values()
    assert {"tasks.compute_stats", "tasks.grayscale_image"} <= set(names)
    active = celery(stack, "inspect", "active", "--json")
    assert active.returncode == 0, active.stderr
    (running,) = json.loads(active.stdout).values()
    assert isinstance(running, list)


def test_control_rate_limit_is_applied_by_the_worker(stack: LocalStack) -> None:
    try:
        result = celery(stack, "control", "rate_limit", "tasks.compute_stats", "600/m")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "new rate limit set successfully" in result.stdout
        eventually(
            lambda: (
                "New rate limit for tasks of type tasks.compute_stats: 600/m" in stack.worker_log()
            ),
            timeout=10,
            what="the worker logged the new rate limit",
        )
    finally:
        celery(stack, "control", "rate_limit", "tasks.compute_stats", "0")


def test_add_consumer_of_a_queue_that_cannot_be_made_is_refused_and_the_worker_goes_on(
    stack: LocalStack,
) -> None:
    """A queue the worker cannot consume (here a name SQS refuses, past 80 characters)
    ended every worker it was sent to (the error was raised in the event loop)."""
    name = "q" * 90
    result = celery(stack, "control", "add_consumer", name)
    assert f"cannot consume from {name}" in result.stdout, result.stdout + result.stderr
    assert stack.worker_alive(), stack.worker_log()[-3000:]
    assert f"add_consumer {name} refused" in stack.worker_log()
    assert stack.tasks.compute_stats.delay([1, 2]).get(timeout=60)["count"] == 2


def test_a_revoked_task_does_not_run(stack: LocalStack) -> None:
    result = stack.tasks.compute_stats.apply_async(([4, 5, 6],), countdown=4)
    stack.app.control.revoke(result.id)
    with pytest.raises(TaskRevokedError):
        result.get(timeout=60)  # REVOKED at once: the worker that heard the revoke says so
    # Once its countdown is over, the worker receives it, and discards it.
    eventually(
        lambda: f"Discarding revoked task: tasks.compute_stats[{result.id}]" in stack.worker_log(),
        what="the worker discarded the task",
    )
    assert f"tasks.compute_stats[{result.id}] succeeded" not in stack.worker_log()


def test_no_receiver_queue_or_subscription_is_left_after_flower_and_events_exit(
    stack: LocalStack,
) -> None:
    before = receiver_queues(stack)
    credentials = {USER_VARIABLE: "admin", PASSWORD_VARIABLE: "another-secret"}
    flower = start(stack, flower_command("127.0.0.1", local._free_port()), credentials)
    events = start(stack, [sys.executable, "-m", "celery", "-A", "tasks", "events", "--dump"])
    try:
        # Each has an event queue, subscribed to the events topic; Flower also reply queues.
        def both_subscribed() -> set[str] | None:
            new = receiver_queues(stack) - before
            events_queues = {q for q in new if "-rx-events-" in q}
            subscribed = len(events_queues) == 2 and events_queues <= subscribed_queues(stack)
            return new if subscribed else None

        mine = eventually(
            both_subscribed, interval=0.5, what="Flower's and celery events' queues subscribed"
        )
        assert sum("-rx-events-" in q for q in mine) == 2, mine
        assert {q for q in mine if "-rx-events-" in q} <= subscribed_queues(stack)
    finally:
        flower.send_signal(signal.SIGTERM)
        events.send_signal(signal.SIGINT)
        flower.wait(60)
        events.wait(60)
    assert receiver_queues(stack) - before == set()
    assert not (subscribed_queues(stack) & mine)


def test_a_crashed_receivers_queue_and_subscription_are_reaped(stack: LocalStack) -> None:
    before = receiver_queues(stack)
    events = start(stack, [sys.executable, "-m", "celery", "-A", "tasks", "events", "--dump"])
    try:

        def made_and_subscribed() -> set[str] | None:  # two steps: wait for both
            new = receiver_queues(stack) - before
            return new if new and new <= subscribed_queues(stack) else None

        orphans = eventually(made_and_subscribed, interval=0.5, what="a receiver queue subscribed")
        assert len(orphans) == 1
    finally:
        events.send_signal(signal.SIGKILL)
        events.wait(60)
    (orphan,) = orphans
    assert orphan in receiver_queues(stack)  # a crash deletes nothing
    # Two hours pass for the orphan (its tags say so); the live worker's queue stays fresh.
    sqs = stack.client("sqs")
    old = str(int(time.time()) - 7200)
    sqs.tag_queue(QueueUrl=stack.queue_url(orphan), Tags={"cloudworker:created": old,
                                                          "cloudworker:seen": old})  # fmt: skip
    result = stack.cli("reap")
    assert result.returncode == 0, result.stderr
    assert orphan in result.stdout
    assert receiver_queues(stack) == before
    assert orphan not in subscribed_queues(stack)
    assert any("-control-" in q for q in receiver_queues(stack))  # the live worker's is kept


def test_a_worker_whose_control_queue_is_deleted_creates_it_again(stack: LocalStack) -> None:
    """``reap --max-age 0`` (or anyone) deletes a live worker's control queue: it comes back."""
    (control,) = [q for q in receiver_queues(stack) if "-control-" in q]
    logged = len(stack.worker_log())
    stack.client("sqs").delete_queue(QueueUrl=stack.queue_url(control))
    # The worker's next receive on it fails: it creates the queue again and subscribes it.
    recreated = f"receiver queue {control} had been deleted; created it again"
    eventually(
        lambda: recreated in stack.worker_log()[logged:],
        timeout=90,
        what=lambda: f"{recreated!r} logged: {stack.worker_log()[-3000:]}",
    )
    assert control in receiver_queues(stack)
    assert stack.worker_alive(), stack.worker_log()[-3000:]
    pong = eventually(
        lambda: out if "pong" in (out := celery(stack, "inspect", "ping").stdout) else None,
        interval=0.5,
        what="a pong",
    )
    assert "worker1@" in pong
    assert control in subscribed_queues(stack)


def test_an_event_receiver_whose_queue_is_deleted_creates_it_again(
    stack: LocalStack, tmp_path: Path
) -> None:
    """The same for a receiver without an event loop (``celery events``, Flower)."""
    before = receiver_queues(stack)
    dump = tmp_path / "events.txt"
    with dump.open("w") as out:
        events = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks", "events", "--dump"],
            cwd=ROOT,
            env={**os.environ, **stack.env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def subscribed() -> set[str] | None:
            new = receiver_queues(stack) - before
            return new if new and new <= subscribed_queues(stack) else None

        mine = eventually(subscribed, interval=0.5, what="the receiver's queue subscribed")
        assert mine and len(mine) == 1
        (queue,) = mine
        stack.client("sqs").delete_queue(QueueUrl=stack.queue_url(queue))
        eventually(
            lambda: queue in receiver_queues(stack) & subscribed_queues(stack),
            timeout=90,
            interval=0.5,
            what="the receiver's queue is back and subscribed",
        )
        sent = stack.tasks.compute_stats.delay([5, 6])
        assert sent.get(timeout=60)["count"] == 2
        # The events of a task sent after the queue came back reach the receiver.
        succeeded = f"task succeeded: tasks.compute_stats({sent.id})"
        eventually(lambda: succeeded in dump.read_text(), what="the receiver got the event")
        assert events.poll() is None  # still running
    finally:
        events.send_signal(signal.SIGINT)
        events.wait(60)
    assert f"receiver queue {queue} had been deleted; created it again" in dump.read_text()


def test_flowers_tasks_page_in_a_real_browser_shows_a_submitted_task(
    stack: LocalStack, flower: Flower
) -> None:
    assert BROWSER.exists() and DRIVER.exists(), (
        "the browser test needs Debian's chromium and chromium-driver; `make test` installs them"
    )
    result = stack.tasks.compute_stats.delay([3, 1, 2])
    assert result.get(timeout=60)["median"] == 2
    token = base64.b64encode(f"{flower.user}:{flower.password}".encode()).decode()
    with WebDriver() as browser:
        browser.devtools("Network.enable", {})
        browser.devtools(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
        )
        browser.open(f"{flower.url}/tasks")

        def page_text() -> str:
            text: str = browser.run("return document.body.innerText;")
            return text if result.id in text else ""

        text = eventually(page_text, interval=1, what="the task on Flower's page")
    assert result.id in text
    assert "SUCCESS" in text.split(result.id, 1)[1][:400]
