"""The outbox: what is ready together for one destination goes in one call."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from cloudworker.outbox import Outbox


class Recorder:
    """A send function that records its calls, and can hold the first one."""

    def __init__(self, *, hold_first: bool = False, fail: set[str] | None = None) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        self._hold = hold_first
        self._fail = fail or set()

    def __call__(self, destination: str, items: Sequence[str]) -> None:
        self.calls.append((destination, list(items)))
        self.entered.set()
        if self._hold:
            self._hold = False
            assert self.release.wait(5)
        if self._fail & set(items):
            raise RuntimeError("refused")


def test_a_lone_item_is_sent_at_once_and_its_future_says_so() -> None:
    send = Recorder()
    outbox: Outbox[str, str] = Outbox(send, name="test-outbox")
    assert outbox.put("q", "a").result(timeout=5) is None
    assert send.calls == [("q", ["a"])]
    outbox.close(5)


def test_what_arrives_while_a_call_is_in_flight_goes_in_the_next_one_per_destination() -> None:
    send = Recorder(hold_first=True)
    outbox: Outbox[str, str] = Outbox(send, name="test-outbox")
    first = outbox.put("q", "a")
    assert send.entered.wait(5)
    later = [outbox.put("q", item) for item in "bcdef"] + [outbox.put("r", "x")]
    send.release.set()
    for future in [first, *later]:
        future.result(timeout=5)
    assert send.calls == [("q", ["a"]), ("q", ["b", "c", "d", "e", "f"]), ("r", ["x"])]
    outbox.close(5)


def test_with_a_linger_items_wait_for_others_and_a_full_batch_goes_at_once() -> None:
    send = Recorder()
    outbox: Outbox[str, str] = Outbox(send, name="test-outbox", linger=60, batch=3)
    futures = [outbox.put("q", item) for item in "abc"]  # a full batch: no 60 s wait
    for future in futures:
        future.result(timeout=5)
    assert send.calls == [("q", ["a", "b", "c"])]
    waiting = outbox.put("q", "d")
    assert not waiting.done()
    outbox.close(5)  # sends what is waiting
    assert waiting.done()
    assert send.calls[-1] == ("q", ["d"])


def test_a_failed_call_fails_its_items_futures_and_the_outbox_goes_on() -> None:
    send = Recorder(hold_first=True, fail={"bad"})
    outbox: Outbox[str, str] = Outbox(send, name="test-outbox")
    held = outbox.put("q", "x")
    assert send.entered.wait(5)
    bad, other = outbox.put("q", "bad"), outbox.put("q", "good")
    send.release.set()
    held.result(timeout=5)
    with pytest.raises(RuntimeError, match="refused"):
        bad.result(timeout=5)
    with pytest.raises(RuntimeError, match="refused"):  # it shared the call
        other.result(timeout=5)
    assert outbox.put("q", "after").result(timeout=5) is None
    outbox.close(5)


def test_a_closed_outbox_takes_nothing_more() -> None:
    outbox: Outbox[str, str] = Outbox(Recorder(), name="test-outbox")
    outbox.close(5)
    with pytest.raises(RuntimeError, match="closed"):
        outbox.put("q", "a")
