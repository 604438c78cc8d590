"""Many inputs at once: progress, refusals and the CLI's exit status (client/bulk.py)."""

from __future__ import annotations

import io
import signal
from pathlib import Path
from typing import Any

import pytest

import tasks
from client import cli
from client.bulk import Item, Progress, run
from cloudworker.errors import InvalidNumbers, LimitExceeded


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

    def get(self, timeout: float, on_message: Any = None) -> Any:
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


def test_the_progress_line_shows_a_running_tasks_reported_progress() -> None:
    stream = io.StringIO()
    progress = Progress(2, stream=stream, enabled=True)
    progress.report("big.txt", {"status": "PROGRESS", "result": {"current": 3, "total": 8}})
    progress.report("big.txt", {"status": "STARTED", "result": {"pid": 7, "hostname": "w@h"}})
    progress.report("big.txt", {"status": "SUCCESS", "result": {"count": 4}})
    lines = stream.getvalue().split("\r")[1:]
    assert lines == [
        "[..............................] 0/2  big.txt: PROGRESS 3/8\x1b[K",
        "[..............................] 0/2  big.txt: STARTED\x1b[K",
    ]


def test_the_progress_line_is_silent_off_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(1, stream=stream, enabled=False)
    progress.report("x", {"status": "PROGRESS", "result": {"current": 1, "total": 2}})
    progress.advance()
    assert stream.getvalue() == ""
