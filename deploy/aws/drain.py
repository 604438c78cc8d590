"""The drain agent: a worker instance finishes its tasks before Auto Scaling ends it.

When the worker group scales in, or a rolling update replaces a worker, Auto
Scaling shuts the instance down, and nothing promises that the OS then gives
systemd the worker unit's TimeoutStopSec for the warm shutdown. So the stack
puts a lifecycle hook (``cloudworker-drain``) on the group's terminations: the
instance waits in ``Terminating:Wait``, up to the hook's heartbeat timeout,
and this agent, run as root by ``cloudworker-drain.service`` on worker
instances only, sees it in the instance metadata (IMDSv2): the
``autoscaling/target-lifecycle-state`` turns ``Terminated``. It then

1. stops the worker unit (``systemctl stop``, which returns once the worker has
   handed back the messages it held, let its running tasks finish for the
   grace period and handed back the rest: bounded by the unit's
   TimeoutStopSec);
2. completes the lifecycle action (``CONTINUE``), so that the instance goes as
   soon as it is drained rather than when the hook times out.

A metadata service that does not answer, or a failed call, is retried at the
next poll; the hook's timeout (its default result is ``CONTINUE`` too) bounds
what a stuck agent can cost. What it needs from outside is injectable, for
tests: the metadata service's address, the stop command and the call that
completes the action.
"""

from __future__ import annotations

import argparse
import http.client
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "HOOK_NAME",
    "Drainer",
    "Metadata",
    "MetadataError",
    "lifecycle_completer",
    "main",
]

#: The stack's lifecycle hook on worker terminations (cloudworker.yaml, DrainHook).
HOOK_NAME = "cloudworker-drain"
#: The instance metadata service; tests serve their own.
METADATA_URL = "http://169.254.169.254"
#: Blocks until the worker has drained, bounded by the unit's TimeoutStopSec.
STOP_COMMAND = ("systemctl", "stop", "cloudworker-worker.service")
#: The target lifecycle state of an instance Auto Scaling is terminating.
TERMINATED = "Terminated"
STATE_PATH = "autoscaling/target-lifecycle-state"
INSTANCE_ID_PATH = "instance-id"
#: Seconds a metadata token lives; a new one is asked for at half that age.
TOKEN_TTL = 300
POLL_SECONDS = 5.0


class MetadataError(Exception):
    """The metadata service did not answer, or answered with an error."""


class Metadata:
    """The instance metadata service, IMDSv2: a session token, then reads carrying it.

    No proxy is ever used (an ``http_proxy`` variable must not send these
    requests off the instance), and every request has a short timeout.
    """

    def __init__(
        self,
        base_url: str = METADATA_URL,
        *,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._clock = clock
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._token: str | None = None
        self._token_time = 0.0

    def get(self, path: str) -> str | None:
        """The text at ``/latest/meta-data/<path>``, or None where there is none (404)."""
        request = urllib.request.Request(
            f"{self.base_url}/latest/meta-data/{path}",
            headers={"X-aws-ec2-metadata-token": self._session_token()},
        )
        try:
            return self._read(request)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            if exc.code == 401:
                self._token = None  # expired or refused: a new one next time
            raise MetadataError(f"GET {path}: HTTP {exc.code}") from exc
        except MetadataError as exc:
            raise MetadataError(f"GET {path}: {exc}") from exc

    def _session_token(self) -> str:
        now = self._clock()
        if self._token is not None and now - self._token_time < TOKEN_TTL / 2:
            return self._token
        request = urllib.request.Request(
            f"{self.base_url}/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL)},
        )
        try:
            token = self._read(request)
        except urllib.error.HTTPError as exc:
            raise MetadataError(f"PUT token: HTTP {exc.code}") from exc
        except MetadataError as exc:
            raise MetadataError(f"PUT token: {exc}") from exc
        self._token, self._token_time = token, now
        return token

    def _read(self, request: urllib.request.Request) -> str:
        """The answer's text; HTTPError for an error status, MetadataError for no answer."""
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                text: str = response.read().decode()
                return text
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise MetadataError(f"{type(exc).__name__}: {exc}") from exc


def lifecycle_completer(autoscaling: Any, hook: str = HOOK_NAME) -> Callable[[str], None]:
    """A call completing ``hook``'s action for an instance id, with ``CONTINUE``.

    The group's name comes from Auto Scaling itself: the template cannot write
    it into the launch template (the group refers to the launch template).
    """

    def complete(instance_id: str) -> None:
        found = autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id])
        instances = found.get("AutoScalingInstances", [])
        if not instances:
            raise LookupError(f"{instance_id} is in no Auto Scaling group")
        autoscaling.complete_lifecycle_action(
            LifecycleHookName=hook,
            AutoScalingGroupName=instances[0]["AutoScalingGroupName"],
            LifecycleActionResult="CONTINUE",
            InstanceId=instance_id,
        )

    return complete


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Drainer:
    """Polls the target lifecycle state; on ``Terminated``, stops the worker, then completes.

    :meth:`poll` is one look and never raises: a step that fails is logged and
    tried again at the next poll. The worker is stopped once; only the
    completion is retried after it.
    """

    def __init__(
        self,
        metadata: Metadata,
        complete: Callable[[str], None],
        *,
        stop_command: Sequence[str] = STOP_COMMAND,
        log: Callable[[str], None] = _log,
    ) -> None:
        self.metadata = metadata
        self.complete = complete
        self.stop_command = tuple(stop_command)
        self.log = log
        self.stopped = False
        self._instance_id: str | None = None
        self._last_seen = ""

    def poll(self) -> bool:
        """Look once; True once the worker is stopped and the lifecycle action completed."""
        try:
            state = self.metadata.get(STATE_PATH)
        except MetadataError as exc:
            self._seen(f"metadata service unavailable, retrying: {exc}")
            return False
        if state is None:
            self._seen("no target lifecycle state yet (not in an Auto Scaling group)")
            return False
        self._seen(f"target lifecycle state: {state}")
        return state == TERMINATED and self._drain()

    def run(
        self, interval: float = POLL_SECONDS, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        """Poll every ``interval`` seconds until drained."""
        while not self.poll():
            sleep(interval)

    def _drain(self) -> bool:
        try:
            instance_id = self._instance()
        except MetadataError as exc:
            self.log(f"cannot read the instance id, retrying: {exc}")
            return False
        if not self.stopped:
            self._stop()
        try:
            self.complete(instance_id)
        except Exception as exc:  # noqa: BLE001 - any failure is retried at the next poll
            self.log(f"cannot complete the lifecycle action, retrying: {type(exc).__name__}: {exc}")
            return False
        self.log(f"lifecycle action completed for {instance_id}: CONTINUE")
        return True

    def _stop(self) -> None:
        """Stop the worker. A failure is logged and not retried: the action is completed anyway.

        ``systemctl stop`` fails when the stop timed out, and then systemd has
        killed what was left; waiting longer would only keep the instance until
        the hook's timeout, whose default result is the same CONTINUE.
        """
        command = shlex.join(self.stop_command)
        self.log(f"instance terminating: stopping the worker ({command})")
        started = time.monotonic()
        try:
            code = subprocess.run(self.stop_command, check=False).returncode
        except OSError as exc:
            self.log(f"cannot run {command}: {exc}; completing the lifecycle action anyway")
        else:
            took = time.monotonic() - started
            if code == 0:
                self.log(f"worker stopped after {took:.0f} s")
            else:
                self.log(f"{command} exited {code} after {took:.0f} s; completing anyway")
        self.stopped = True

    def _instance(self) -> str:
        if self._instance_id is None:
            found = self.metadata.get(INSTANCE_ID_PATH)
            if not found:
                raise MetadataError("no instance id")
            self._instance_id = found
        return self._instance_id

    def _seen(self, observation: str) -> None:
        """Log what the poll saw when it differs from the last poll: no line every 5 s."""
        if observation != self._last_seen:
            self.log(observation)
            self._last_seen = observation


def main(argv: list[str] | None = None) -> int:
    """``python -m deploy.aws.drain``: the drain unit's command, on worker instances."""
    parser = argparse.ArgumentParser(
        prog="python -m deploy.aws.drain",
        description="Stop the worker and complete the lifecycle action when Auto Scaling "
        "terminates this instance.",
    )
    parser.add_argument("--metadata-url", default=METADATA_URL, help=f"default {METADATA_URL}")
    parser.add_argument(
        "--stop-command",
        default=shlex.join(STOP_COMMAND),
        help=f"run on termination, returning once drained (default: {shlex.join(STOP_COMMAND)})",
    )
    parser.add_argument("--hook-name", default=HOOK_NAME, help=f"default {HOOK_NAME}")
    parser.add_argument(
        "--interval", type=float, default=POLL_SECONDS, help="seconds between polls (default 5)"
    )
    args = parser.parse_args(argv)
    from cloudworker import aws
    from cloudworker.settings import load as load_settings

    autoscaling = aws.client("autoscaling", load_settings())
    drainer = Drainer(
        Metadata(args.metadata_url),
        lifecycle_completer(autoscaling, args.hook_name),
        stop_command=shlex.split(args.stop_command),
    )
    _log(f"watching {args.metadata_url} for this instance's termination")
    drainer.run(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
