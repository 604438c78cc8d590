"""Revocations that stick (kept in S3, loaded by every starting worker), and purging twice.

Test workers serve a queue of their own (:mod:`tests.support.workers`) and load the
slow test task, which notes each execution in a marker file: a task that was
refused never creates its marker. The session's shared worker serves another
queue, but it hears every revoke broadcast and, as Celery 5.7 does, marks a
pending task REVOKED at once; so the tests that show a worker itself storing
REVOKED keep the revocation in S3 only, as a broadcast nobody heard.
"""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from celery.exceptions import TaskRevokedError

from cloudworker import codec
from cloudworker.application import create_app
from cloudworker.worker.revocations import remember
from deploy import local
from tests.integration.conftest import LocalStack
from tests.support.waiting import eventually
from tests.support.workers import Workers

pytestmark = pytest.mark.integration

QUEUE = "revoke"
WORKER = "revoke1"
#: How long the task of the restart test waits in SQS (DelaySeconds) before a worker sees it.
COUNTDOWN = 20

#: A process of its own reads a task's state and result from S3 (it sent nothing).
READ_STATE = """
import sys
from celery.result import AsyncResult
from cloudworker.application import create_app
result = AsyncResult(sys.argv[1], app=create_app())
print(result.state, type(result.result).__name__)
"""


@pytest.fixture(scope="module")
def pool(local_stack: LocalStack) -> Iterator[Workers]:
    workers = Workers.on_queue(local_stack, QUEUE, visibility=30, wait_seconds=1)
    try:
        yield workers
    finally:
        workers.close(WORKER)


def state_elsewhere(stack: LocalStack, task_id: str) -> str:
    """``state result-type`` of ``task_id`` as a new process reads it."""
    done = stack.run("-c", READ_STATE, task_id, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def log_since(workers: Workers, offset: int) -> str:
    with workers.stack.log_file(WORKER).open("rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace")


def refused_or_ran(workers: Workers, offset: int, task_id: str, marker: Path) -> str:
    """Wait until the worker refused ``task_id`` or ran it; return its log since ``offset``."""
    refused = f"Discarding revoked task: tests.slow[{task_id}]"
    eventually(
        lambda: refused in log_since(workers, offset) or marker.exists(),
        what=f"the worker refused or ran {task_id}",
    )
    return log_since(workers, offset)


def loaded_ids(log: str) -> int:
    """How many revoked ids the worker said it loaded at start."""
    found = re.search(r"loaded (\d+) revoked task id\(s\)", log)
    assert found, log[-3000:]
    return int(found.group(1))


def start(workers: Workers) -> int:
    """Start the test worker, ready; return where its log of this run starts."""
    offset = local.log_size(workers.stack, WORKER)
    workers.start(WORKER, wait_ready=True)
    return offset


def test_a_task_revoked_while_its_queue_has_no_worker_is_refused_by_one_started_later(
    pool: Workers, local_stack: LocalStack, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    result = pool.slow(0.1, marker)
    result.revoke()
    offset = start(pool)
    try:
        log = refused_or_ran(pool, offset, result.id, marker)
        assert not marker.exists(), "the revoked task ran"
        assert loaded_ids(log) >= 1
        assert f"Discarding revoked task: tests.slow[{result.id}]" in log
        with pytest.raises(TaskRevokedError):
            result.get(timeout=30)
        assert state_elsewhere(local_stack, result.id) == "REVOKED TaskRevokedError"
        assert local_stack.wait_for_depth(pool.app.services.settings.task_queue_name, 0)
    finally:
        pool.stop(WORKER)


def test_a_revocation_no_running_worker_heard_is_stored_revoked_by_the_worker_that_refuses(
    pool: Workers, local_stack: LocalStack, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    result = pool.slow(0.1, marker)
    # What revoke() writes before its broadcast, with the broadcast lost (no worker up,
    # or CLOUDWORKER_REMOTE_CONTROL=false): nobody has stored REVOKED yet.
    remember(pool.app.services.store(), [result.id])
    assert state_elsewhere(local_stack, result.id) == "PENDING NoneType"
    offset = start(pool)
    try:
        log = refused_or_ran(pool, offset, result.id, marker)
        assert not marker.exists(), "the revoked task ran"
        assert f"Discarding revoked task: tests.slow[{result.id}]" in log
        with pytest.raises(TaskRevokedError):  # pushed to this process by the refusing worker
            result.get(timeout=30)
        assert state_elsewhere(local_stack, result.id) == "REVOKED TaskRevokedError"
    finally:
        pool.stop(WORKER)


def test_a_revocation_a_worker_heard_holds_after_it_restarts(
    pool: Workers, local_stack: LocalStack, tmp_path: Path
) -> None:
    offset = start(pool)
    try:
        marker = tmp_path / "ran"
        visible_at = time.monotonic() + COUNTDOWN
        result = pool.slow(0.1, marker, countdown=COUNTDOWN)  # SQS hides it until then
        result.revoke()
        local.wait_for_log(pool.stack, WORKER, offset, f"Tasks flagged as revoked: {result.id}")
        pool.stop(WORKER)  # and with it, what it held in memory
        offset = start(pool)
        assert time.monotonic() < visible_at - 2, "restarted too late to show anything"
        log = refused_or_ran(pool, offset, result.id, marker)
        assert not marker.exists(), "the revoked task ran after the restart"
        assert loaded_ids(log) >= 1
        assert f"Discarding revoked task: tests.slow[{result.id}]" in log
        with pytest.raises(TaskRevokedError):
            result.get(timeout=30)
        assert state_elsewhere(local_stack, result.id) == "REVOKED TaskRevokedError"
    finally:
        pool.stop(WORKER)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_revoke_with_terminate_ends_a_running_task_as_revoked(
    pool: Workers, local_stack: LocalStack, tmp_path: Path
) -> None:
    start(pool)
    try:
        marker, finished = tmp_path / "ran", tmp_path / "finished"
        result = pool.app.send_task("tests.slow", args=[60, str(marker), str(finished)])
        # The task creates its marker, then writes its pid into it: wait for the pid.
        eventually(
            lambda: marker.exists() and marker.read_text().endswith("\n"),
            what="the task started and noted its pid",
        )
        (pid,) = (int(line) for line in marker.read_text().split())
        asked = time.monotonic()
        result.revoke(terminate=True)
        with pytest.raises(TaskRevokedError):
            result.get(timeout=30)
        # The pool process running it ended.
        eventually(lambda: not alive(pid), timeout=30, what="the pool process ended")
        assert time.monotonic() - asked < 30  # long before the task's 60 s
        assert state_elsewhere(local_stack, result.id) == "REVOKED TaskRevokedError"
        assert local_stack.wait_for_depth(pool.app.services.settings.task_queue_name, 0)
        assert marker.read_text().split() == [str(pid)]  # not run again
        assert not finished.exists()
    finally:
        pool.stop(WORKER)


def refuses_a_second_purge(local_stack: LocalStack) -> bool:
    """Whether the endpoint enforces SQS's one PurgeQueue per queue per 60 s (moto does)."""
    sqs = local_stack.client("sqs")
    url = sqs.create_queue(QueueName=f"purge-probe-{time.time_ns()}")["QueueUrl"]
    try:
        sqs.purge_queue(QueueUrl=url)
        try:
            sqs.purge_queue(QueueUrl=url)
        except ClientError as error:
            code: str = error.response["Error"]["Code"]
            return code.endswith("PurgeQueueInProgress")
        return False
    finally:
        sqs.delete_queue(QueueUrl=url)


def test_a_second_purge_within_a_minute_still_empties_the_queue(
    local_stack: LocalStack,
) -> None:
    if not refuses_a_second_purge(local_stack):
        pytest.skip("this endpoint (ministack) accepts a second PurgeQueue within 60 s: no drain")
    idle = Workers.on_queue(local_stack, "purge", visibility=30, wait_seconds=1)  # no worker
    queue = idle.app.services.settings.task_queue_name
    try:

        def send(count: int) -> None:
            for n in range(count):
                idle.app.send_task("tests.add", args=[n, 1])
            assert local_stack.wait_for_depth(queue, count)

        send(3)
        first_at = time.monotonic()
        assert idle.app.control.purge() == 3  # PurgeQueue; kombu's own count would say 30
        assert local_stack.queue_depth(queue) == 0
        send(4)
        assert idle.app.control.purge() == 4  # PurgeQueue refused: drained
        assert local_stack.queue_depth(queue) == 0
        send(2)
        purged = local_stack.run(
            "-m", "celery", "-A", "tasks", "purge", "-f", env={"CLOUDWORKER_TASK_QUEUE": "purge"}
        )  # another process, which never purged: SQS's refusal is what it goes by
        assert purged.returncode == 0, purged.stderr[-2000:]
        assert "Purged 2 messages from 1 known task queue." in purged.stdout
        assert local_stack.queue_depth(queue) == 0
        with pytest.raises(ClientError, match="PurgeQueueInProgress"):  # the limit was on
            local_stack.client("sqs").purge_queue(QueueUrl=local_stack.queue_url(queue))
        assert time.monotonic() - first_at < 60
    finally:
        idle.close()


def test_a_revocation_too_large_for_a_message_reaches_a_running_worker(
    pool: Workers, local_stack: LocalStack, tmp_path: Path
) -> None:
    """A broadcast over the inline limit travels with its arguments in S3; the running
    worker's pidbox got the reference itself and ignored the revocation (about 5,000 ids
    at the default limit: here a client with a 2 KB limit sends 200)."""
    settings = dataclasses.replace(pool.app.services.settings, inline_max_bytes=2000)
    small_messages = create_app(settings)  # installs its codec: every send of this process
    offset = start(pool)
    try:
        victim = str(uuid.uuid4())
        ids = [str(uuid.uuid4()) for _ in range(199)] + [victim]
        small_messages.control.revoke(ids)
        local.wait_for_log(pool.stack, WORKER, offset, victim)  # "Tasks flagged as revoked"
        marker = tmp_path / "ran"
        result = pool.slow(0.1, marker, task_id=victim)
        log = refused_or_ran(pool, offset, victim, marker)
        assert not marker.exists(), "the revoked task ran"
        assert f"Discarding revoked task: tests.slow[{victim}]" in log
        assert "ignored control command" not in log
        with pytest.raises(TaskRevokedError):
            result.get(timeout=30)
    finally:
        codec.install(local_stack.app.services.codec)
        small_messages.services.mailbox.close()
        pool.stop(WORKER)
