"""Batched sends and the progress bar."""

from __future__ import annotations

import io
import signal
from pathlib import Path
from typing import Any

import pytest

import tasks
from client import cli
from client.batch import Item, Progress, run
from tasks.batching import BatchSendError, SendBatch
from tasks.errors import InvalidNumbers, LimitExceeded


class RecordingClient:
    def __init__(self, fail: int = 0) -> None:
        self.calls: list[tuple[str, list[dict[str, Any]]]] = []
        self.fail = fail

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append((QueueUrl, Entries))
        failed = [{"Id": e["Id"], "Code": "X", "Message": "too big"} for e in Entries[: self.fail]]
        return {"Failed": failed}


def test_ten_messages_per_request_per_queue() -> None:
    client, batch = RecordingClient(), SendBatch()
    for i in range(25):
        batch.add(client, {"QueueUrl": "q1", "MessageBody": f"m{i}"})
    batch.add(client, {"QueueUrl": "q2", "MessageBody": "other", "DelaySeconds": 5})
    batch.flush()
    sizes = [(url, len(entries)) for url, entries in client.calls]
    assert sorted(sizes) == [("q1", 5), ("q1", 10), ("q1", 10), ("q2", 1)]
    assert (batch.messages, batch.requests) == (26, 4)
    bodies = [e["MessageBody"] for url, entries in client.calls if url == "q1" for e in entries]
    assert bodies == [f"m{i}" for i in range(25)]
    assert (
        client.calls[-1][1][0]["DelaySeconds"] == 5 or client.calls[-2][1][0]["DelaySeconds"] == 5
    )


def test_a_batch_never_exceeds_256_kib() -> None:
    client, batch = RecordingClient(), SendBatch()
    for _ in range(5):
        batch.add(client, {"QueueUrl": "q", "MessageBody": "x" * 100_000})
    batch.flush()
    assert [len(entries) for _, entries in client.calls] == [2, 2, 1]


def test_refused_messages_are_an_error() -> None:
    client, batch = RecordingClient(fail=1), SendBatch()
    batch.add(client, {"QueueUrl": "q", "MessageBody": "a"})
    with pytest.raises(BatchSendError, match="1 of 1 messages were refused: too big"):
        batch.flush()


def test_progress_draws_only_when_enabled() -> None:
    shown, hidden = io.StringIO(), io.StringIO()
    for stream, enabled in ((shown, True), (hidden, False)):
        progress = Progress(4, stream, enabled=enabled)
        for _ in range(4):
            progress.advance()
        progress.close()
    assert shown.getvalue().endswith("\r[" + "#" * 30 + "] 4/4\n")
    assert "] 2/4" in shown.getvalue()
    assert hidden.getvalue() == ""


class Answer:
    def __init__(self, value: Any) -> None:
        self.value = value

    def get(self, timeout: float) -> Any:
        return self.value


class RefusingTask:
    """Refuses at send time, as a sender's limit check does, any list of two numbers."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def apply_async(self, arguments: tuple[Any, ...]) -> Answer:
        if len(arguments[0]) == 2:
            raise LimitExceeded("2 integers are more than this test allows")
        self.sent.append(arguments)
        return Answer({"count": len(arguments[0]), "mean": 1.0, "median": 1, "min": 1, "max": 1})


def test_an_input_refused_at_send_time_does_not_stop_the_others() -> None:
    def bad_file() -> tuple[Any, ...]:
        raise InvalidNumbers("c: no integers")

    task = RefusingTask()
    items = [
        Item("a", lambda: ([1],)),
        Item("b", lambda: ([1, 2],)),
        Item("c", bad_file),
        Item("d", lambda: ([1, 2, 3],)),
    ]
    progress = Progress(4, io.StringIO(), enabled=False)
    report = run(task, items, timeout=5, progress=progress)
    assert task.sent == [([1],), ([1, 2, 3],)]
    assert [(item.label, item.error) for item in report.bad] == [
        ("b", "2 integers are more than this test allows"),
        ("c", "c: no integers"),
    ]
    assert [item.value["count"] for item in report.items if item.error is None] == [1, 3]
    assert progress.done == 4


def test_cli_exits_2_when_one_input_is_refused_at_send_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tasks, "compute_stats", RefusingTask(), raising=False)
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    (tmp_path / "one.txt").write_text("7\n")
    (tmp_path / "two.txt").write_text("1 2\n")
    files = [str(tmp_path / name) for name in ("one.txt", "two.txt")]
    assert cli.main(["stats", *files, "--timeout", "5"]) == cli.EXIT_BAD_INPUT
    out, err = capsys.readouterr()
    assert out.startswith(f"== {files[0]}\ncount  1\n")
    assert f"error: {files[1]}: 2 integers are more than this test allows\n" in err
    assert "2 inputs: 1 done, 1 bad" in err
