"""The drain agent (deploy/aws/drain.py), against a real HTTP metadata service on 127.0.0.1.

The service here speaks IMDSv2 as EC2's does where the agent depends on it: a
token from ``PUT /latest/api/token`` (which needs the TTL header), refused
reads (401) without it, 404 for ``autoscaling/target-lifecycle-state`` while
the instance is in no group. The stop command is a real process writing a
file; Auto Scaling is a recording callable, or a fake client for
:func:`drain.lifecycle_completer`.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from deploy.aws import drain

INSTANCE_ID = "i-0123456789abcdef0"


@dataclass
class FakeMetadata:
    """What the served metadata says, and what it was asked."""

    state: str | None = "InService"  # None: 404, as outside an Auto Scaling group
    fail: int = 0  # the next n reads of the state answer 500
    tokens_issued: int = 0
    requests: list[str] = field(default_factory=list)
    base_url: str = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                fake.requests.append(f"PUT {self.path}")
                if self.path != "/latest/api/token":
                    self._answer(404, "")
                elif not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    self._answer(400, "missing TTL")
                else:
                    fake.tokens_issued += 1
                    self._answer(200, f"token-{fake.tokens_issued}")

            def do_GET(self) -> None:
                fake.requests.append(f"GET {self.path}")
                token = self.headers.get("X-aws-ec2-metadata-token", "")
                if token != f"token-{fake.tokens_issued}":
                    self._answer(401, "")
                elif self.path == "/latest/meta-data/instance-id":
                    self._answer(200, INSTANCE_ID)
                elif self.path == "/latest/meta-data/autoscaling/target-lifecycle-state":
                    if fake.fail:
                        fake.fail -= 1
                        self._answer(500, "")
                    elif fake.state is None:
                        self._answer(404, "")
                    else:
                        self._answer(200, fake.state)
                else:
                    self._answer(404, "")

            def _answer(self, status: int, text: str) -> None:
                body = text.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def imds() -> Iterator[FakeMetadata]:
    fake = FakeMetadata()
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class Recorder:
    """The injected Auto Scaling call and the log, recorded; ``fail`` failures first."""

    fail: int = 0
    completed: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def complete(self, instance_id: str) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("throttled")
        self.completed.append(instance_id)


def stop_writing(path: Path, code: int = 0) -> list[str]:
    """A stop command that appends a line to ``path`` and exits ``code``."""
    script = "import sys; open(sys.argv[1], 'a').write('stopped\\n'); sys.exit(int(sys.argv[2]))"
    return [sys.executable, "-c", script, str(path), str(code)]


def drainer(imds: FakeMetadata, recorder: Recorder, stop: list[str]) -> drain.Drainer:
    return drain.Drainer(
        drain.Metadata(imds.base_url),
        recorder.complete,
        stop_command=stop,
        log=recorder.lines.append,
    )


# -- the metadata service -------------------------------------------------------------


def test_reads_carry_a_token_that_is_reused_then_renewed(imds: FakeMetadata) -> None:
    now = [0.0]
    metadata = drain.Metadata(imds.base_url, clock=lambda: now[0])
    assert metadata.get("instance-id") == INSTANCE_ID
    assert metadata.get("autoscaling/target-lifecycle-state") == "InService"
    assert imds.tokens_issued == 1
    now[0] = drain.TOKEN_TTL / 2  # half its life: a new one before it can expire
    assert metadata.get("instance-id") == INSTANCE_ID
    assert imds.tokens_issued == 2
    assert imds.requests[0] == "PUT /latest/api/token"


def test_no_state_outside_a_group_and_errors_are_metadata_errors(imds: FakeMetadata) -> None:
    metadata = drain.Metadata(imds.base_url)
    imds.state = None
    assert metadata.get("autoscaling/target-lifecycle-state") is None
    imds.fail = 1
    with pytest.raises(drain.MetadataError, match="HTTP 500"):
        metadata.get("autoscaling/target-lifecycle-state")


def test_a_refused_token_is_renewed_at_the_next_read(imds: FakeMetadata) -> None:
    metadata = drain.Metadata(imds.base_url)
    assert metadata.get("instance-id") == INSTANCE_ID
    imds.tokens_issued += 1  # the service forgot the token (expired, restarted)
    with pytest.raises(drain.MetadataError, match="HTTP 401"):
        metadata.get("instance-id")
    assert metadata.get("instance-id") == INSTANCE_ID


def test_an_unreachable_service_is_a_metadata_error() -> None:
    with pytest.raises(drain.MetadataError, match="PUT token"):
        drain.Metadata(closed_port_url(), timeout=1).get("instance-id")


def test_a_proxy_setting_never_takes_metadata_requests_off_the_instance(
    imds: FakeMetadata, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, closed_port_url())
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert drain.Metadata(imds.base_url).get("instance-id") == INSTANCE_ID


def closed_port_url() -> str:
    """The URL of a local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- the agent ------------------------------------------------------------------------


def test_in_service_nothing_happens(imds: FakeMetadata, tmp_path: Path) -> None:
    recorder = Recorder()
    agent = drainer(imds, recorder, stop_writing(tmp_path / "stopped"))
    assert [agent.poll() for _ in range(3)] == [False, False, False]
    assert not (tmp_path / "stopped").exists() and recorder.completed == []
    assert recorder.lines == ["target lifecycle state: InService"]  # once, not each poll


def test_terminated_stops_the_worker_then_completes(imds: FakeMetadata, tmp_path: Path) -> None:
    recorder = Recorder()
    stopped = tmp_path / "stopped"
    agent = drainer(imds, recorder, stop_writing(stopped))
    assert agent.poll() is False
    imds.state = "Terminated"
    assert agent.poll() is True
    assert stopped.read_text() == "stopped\n"
    assert recorder.completed == [INSTANCE_ID]
    assert recorder.lines[0] == "target lifecycle state: InService"
    assert recorder.lines[1] == "target lifecycle state: Terminated"
    assert recorder.lines[2].startswith("instance terminating: stopping the worker (")
    assert recorder.lines[3].startswith("worker stopped after ")
    assert recorder.lines[4:] == [f"lifecycle action completed for {INSTANCE_ID}: CONTINUE"]


def test_outside_a_group_and_through_hiccups_it_keeps_polling(
    imds: FakeMetadata, tmp_path: Path
) -> None:
    recorder = Recorder()
    agent = drainer(imds, recorder, stop_writing(tmp_path / "stopped"))
    imds.state = None
    assert [agent.poll(), agent.poll()] == [False, False]
    imds.state, imds.fail = "Terminated", 2
    assert [agent.poll(), agent.poll()] == [False, False]
    assert agent.poll() is True
    assert recorder.completed == [INSTANCE_ID]
    assert recorder.lines[:2] == [
        "no target lifecycle state yet (not in an Auto Scaling group)",
        "metadata service unavailable, retrying: GET autoscaling/target-lifecycle-state: HTTP 500",
    ]


def test_a_failed_completion_is_retried_without_stopping_again(
    imds: FakeMetadata, tmp_path: Path
) -> None:
    recorder = Recorder(fail=1)
    stopped = tmp_path / "stopped"
    agent = drainer(imds, recorder, stop_writing(stopped))
    imds.state = "Terminated"
    assert agent.poll() is False
    assert "cannot complete the lifecycle action, retrying: ConnectionError: throttled" in (
        recorder.lines
    )
    assert agent.poll() is True
    assert stopped.read_text() == "stopped\n"  # once
    assert recorder.completed == [INSTANCE_ID]


def test_a_failed_stop_still_completes(imds: FakeMetadata, tmp_path: Path) -> None:
    """systemctl stop fails when the stop timed out: systemd has killed the rest by then."""
    recorder = Recorder()
    agent = drainer(imds, recorder, stop_writing(tmp_path / "stopped", code=3))
    imds.state = "Terminated"
    assert agent.poll() is True
    assert any(" exited 3 after " in line for line in recorder.lines)
    assert recorder.completed == [INSTANCE_ID]
    missing = drainer(imds, Recorder(), [str(tmp_path / "no-such-command")])
    assert missing.poll() is True


def test_run_polls_at_the_interval_until_drained(imds: FakeMetadata, tmp_path: Path) -> None:
    recorder = Recorder()
    agent = drainer(imds, recorder, stop_writing(tmp_path / "stopped"))
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:
            imds.state = "Terminated"

    agent.run(interval=5.0, sleep=sleep)
    assert slept == [5.0, 5.0] and recorder.completed == [INSTANCE_ID]


# -- Auto Scaling ---------------------------------------------------------------------


class FakeAutoScaling:
    def __init__(self, groups: dict[str, str]) -> None:
        self.groups = groups
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def describe_auto_scaling_instances(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("describe_auto_scaling_instances", kwargs))
        found = [i for i in kwargs["InstanceIds"] if i in self.groups]
        return {
            "AutoScalingInstances": [
                {"InstanceId": i, "AutoScalingGroupName": self.groups[i]} for i in found
            ]
        }

    def complete_lifecycle_action(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("complete_lifecycle_action", kwargs))
        return {}


def test_completion_names_the_hook_and_the_instances_group() -> None:
    autoscaling = FakeAutoScaling({INSTANCE_ID: "cw-WorkerGroup-ABC"})
    drain.lifecycle_completer(autoscaling)(INSTANCE_ID)
    assert autoscaling.calls == [
        ("describe_auto_scaling_instances", {"InstanceIds": [INSTANCE_ID]}),
        (
            "complete_lifecycle_action",
            {
                "LifecycleHookName": "cloudworker-drain",
                "AutoScalingGroupName": "cw-WorkerGroup-ABC",
                "LifecycleActionResult": "CONTINUE",
                "InstanceId": INSTANCE_ID,
            },
        ),
    ]
    with pytest.raises(LookupError, match="in no Auto Scaling group"):
        drain.lifecycle_completer(FakeAutoScaling({}))(INSTANCE_ID)


def test_the_command_line_has_the_injectable_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "deploy.aws.drain", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for option in ("--metadata-url", "--stop-command", "--hook-name", "--interval"):
        assert option in done.stdout
    assert "systemctl stop cloudworker-worker.service" in done.stdout
