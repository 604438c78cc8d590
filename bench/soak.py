"""``make soak``: many tasks through two workers while faults are injected; nothing lost or doubled.

A local stack is started in a temporary directory with two workers that reach
the endpoint through a fault-injecting proxy (:mod:`tests.support.faultproxy`). The
client (direct to the endpoint) keeps a sliding window of ``compute_stats``
tasks outstanding and checks every answer, while a fault thread, in rounds,
SIGKILLs a whole worker (restarting it), SIGKILLs a pool process, and makes the
endpoint answer 503s, reset connections and go dark for ten seconds. The report
(stdout and ``bench/SOAK.md``) counts tasks sent, answered correctly, lost (no
answer) and duplicated (a second, different answer for a task).

    python -m bench.soak [--tasks 10000] [--window 400]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cloudworker.application import create_app
from cloudworker.settings import Settings
from cloudworker.sqs.batch_sends import batch_sends
from deploy import local
from tasks.definitions import register
from tests.support.faultproxy import FaultProxy

ROOT = Path(__file__).resolve().parent.parent
WORKERS = ("soak1", "soak2")
#: Seconds without a notice after which a task's result is looked up in S3.
OVERDUE = 60.0
#: Seconds without an answer after which a task counts as lost.
PATIENCE = 300.0


@dataclasses.dataclass
class Tally:
    sent: int = 0
    answered: int = 0
    wrong: int = 0
    lost: int = 0
    from_s3: int = 0
    faults: list[str] = dataclasses.field(default_factory=list)


class Faults(threading.Thread):
    """Injects one fault after another until stopped."""

    def __init__(self, stack: local.Stack, proxy: FaultProxy, env: dict[str, str], tally: Tally):
        super().__init__(daemon=True)
        self.stack, self.proxy, self.env, self.tally = stack, proxy, env, tally
        self.stopping = threading.Event()

    def note(self, what: str) -> None:
        self.tally.faults.append(f"{time.strftime('%H:%M:%S')} {what}")
        print(f"  fault: {what}", flush=True)

    def pause(self, seconds: float) -> bool:
        return self.stopping.wait(seconds)

    def run(self) -> None:
        rounds = 0
        while not self.pause(20):
            rounds += 1
            name = WORKERS[rounds % 2]
            pid = self.stack.pid(name)
            if pid is not None:
                os.killpg(pid, signal.SIGKILL)
                self.note(f"SIGKILL worker {name}")
                if self.pause(5):
                    break
                self.stack.pid_file(name).unlink(missing_ok=True)
                local.start_process(self.stack, name, worker_command(name), self.env)
            if self.pause(10):
                break
            child = _a_pool_process(self.stack.pid(WORKERS[(rounds + 1) % 2]))
            if child is not None:
                os.kill(child, signal.SIGKILL)
                self.note("SIGKILL one pool process")
            for kind, rate, seconds in (("503", 0.5, 5), ("reset", 0.3, 5), ("cut", 1.0, 10)):
                if self.pause(5):
                    return
                self.proxy.fault(kind, rate=rate)
                self.note(f"endpoint {kind} ({int(rate * 100)}%) for {seconds} s")
                self.pause(seconds)
                self.proxy.fault(None)


def _a_pool_process(parent: int | None) -> int | None:
    if parent is None:
        return None
    children = Path(f"/proc/{parent}/task/{parent}/children")
    try:
        pids = [int(p) for p in children.read_text().split()]
    except (OSError, ValueError):
        return None
    return pids[0] if pids else None


def worker_command(name: str) -> list[str]:
    return local.worker_command(name, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument(
        "--window", type=int, default=400, help="tasks outstanding at once (a sliding window)"
    )
    args = parser.parse_args(argv)

    stack = local.Stack(Path(tempfile.mkdtemp(prefix="cloudworker-soak-")))
    started = time.monotonic()
    env = local.up(stack, workers=0, flower=False)
    os.environ.update(env)
    settings = Settings.from_env(env)
    app = create_app(settings)
    tasks = register(app)
    tally = Tally()
    with FaultProxy(env["AWS_ENDPOINT_URL"]) as proxy:
        worker_env = {
            **os.environ,
            **env,
            "AWS_ENDPOINT_URL": proxy.url,
            "CLOUDWORKER_WAIT_SECONDS": "5",
            "PYTHONPATH": str(ROOT),
        }
        for name in WORKERS:
            local.start_process(stack, name, worker_command(name), worker_env)
        faults = Faults(stack, proxy, worker_env, tally)
        faults.start()
        try:
            _run_window(app, tasks.compute_stats, args, tally)
        finally:
            faults.stopping.set()
            faults.join()
            time.sleep(3)  # late repeat notices, if any, arrive now
            mailbox = app.services.mailbox
            mailbox.poll(1)
            repeats, conflicts = mailbox.duplicate_notices, mailbox.conflicting_notices
            mailbox.close()
            injected = (proxy.requests, proxy.injected)
            executions = _executions(stack)
            local.down(stack)
    minutes = (time.monotonic() - started) / 60
    report = _report(
        args,
        tally=tally,
        repeats=repeats,
        conflicts=conflicts,
        injected=injected,
        executions=executions,
        minutes=minutes,
    )
    print(report)
    (ROOT / "bench" / "SOAK.md").write_text(report)
    ok = (
        tally.lost == 0
        and conflicts == 0
        and tally.wrong == 0
        and tally.answered == tally.sent == args.tasks
    )
    return 0 if ok else 1


def _run_window(app: Any, task: Any, args: argparse.Namespace, tally: Tally) -> None:
    """Keep ``args.window`` tasks outstanding, topping up as answers arrive.

    An answer comes as a notice on the client's response queue. A task without
    one after :data:`OVERDUE` seconds is looked up in S3, as a client's
    ``get()`` does when a notice does not come (a worker could not send it
    during a fault); it is lost if it has no result :data:`PATIENCE` seconds
    after it was sent.
    """
    mailbox = app.services.mailbox
    reader = create_app(app.services.settings)  # did not send the tasks: reads S3
    outstanding: dict[str, tuple[int, Any, float]] = {}
    next_number = 0
    last_report = time.monotonic()
    while next_number < args.tasks or outstanding:
        room = min(args.window - len(outstanding), args.tasks - next_number)
        if room > 0:
            with batch_sends():
                for i in range(next_number, next_number + room):
                    result = task.delay([i, i + 1, i + 2])
                    outstanding[result.id] = (i, result, time.monotonic())
            next_number += room
            tally.sent += room
        mailbox.poll(5)
        now = time.monotonic()
        for task_id, (i, result, sent_at) in list(outstanding.items()):
            if mailbox.notice(task_id) is not None:
                value = result.get(timeout=5)  # the notice is here: returns at once
            elif now - sent_at > OVERDUE and reader.AsyncResult(task_id).ready():
                tally.from_s3 += 1
                value = reader.AsyncResult(task_id).get(timeout=5)
            elif now - sent_at > PATIENCE:
                tally.lost += 1
                del outstanding[task_id]
                continue
            else:
                continue
            del outstanding[task_id]
            if value["median"] == i + 1 and value["count"] == 3:
                tally.answered += 1
            else:
                tally.wrong += 1
        if now - last_report > 15:
            last_report = now
            print(
                f"  {tally.sent} sent, {tally.answered} answered, {tally.lost} lost, "
                f"{len(outstanding)} outstanding",
                flush=True,
            )


def _executions(stack: local.Stack) -> int:
    logs = [stack.log_file(name) for name in WORKERS]
    text = "".join(p.read_text(errors="replace") for p in logs if p.exists())
    return sum(
        1 for line in text.splitlines() if "tasks.compute_stats[" in line and " succeeded " in line
    )


def _report(
    args: argparse.Namespace,
    *,
    tally: Tally,
    repeats: int,
    conflicts: int,
    injected: tuple[int, int],
    executions: int,
    minutes: float,
) -> str:
    lines = [
        "# Soak",
        "",
        f"`make soak` (`python -m bench.soak --tasks {args.tasks}`), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {minutes:.1f} min, "
        f"two workers (`-c 2`) behind a fault-injecting proxy, local moto endpoint.",
        "",
        "| tasks sent | answered correctly | wrong | lost | duplicated answers |",
        "|---|---|---|---|---|",
        f"| {tally.sent} | {tally.answered} | {tally.wrong} | {tally.lost} | {conflicts} |",
        "",
        "A duplicated answer is a second, different result delivered for a task. "
        f"Executions logged as succeeded by the workers: {executions} "
        f"({executions - tally.answered} more than tasks: reruns of messages a killed worker "
        "held). Each rerun found the first result in S3 (conditional write) and re-sent that "
        f"same result: {repeats} repeat notices, all identical to the first, which the client "
        f"ignores. {tally.from_s3} answers were read from S3 because their notice never "
        "came (the worker could not send it during a fault; the client's `get()` does the "
        "same after one long poll). Proxy: {0} requests, {1} answered with a fault."
        "".format(*injected),
        "",
        "Faults injected:",
        "",
        *[f"- {fault}" for fault in tally.faults],
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
