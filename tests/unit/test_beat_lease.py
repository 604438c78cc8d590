"""The beat leader lease (cloudworker/beat.py) on the in-memory object store."""

from __future__ import annotations

from cloudworker.beat import Lease
from cloudworker.objectstore import MemoryObjectStore

KEY = "beat/shop.lease.json"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pair() -> tuple[Lease, Lease, Clock]:
    store, clock = MemoryObjectStore(), Clock()
    return (
        Lease(store, KEY, holder="a", seconds=10, clock=clock),
        Lease(store, KEY, holder="b", seconds=10, clock=clock),
        clock,
    )


def test_one_holder_at_a_time_and_the_holder_keeps_it_by_renewing() -> None:
    a, b, clock = pair()
    assert a.hold() and not b.hold()
    for _ in range(5):
        clock.now += 9  # renewed before it ends, every time
        assert a.hold() and not b.hold()


def test_another_takes_over_once_the_lease_has_ended_and_the_old_holder_then_cannot() -> None:
    a, b, clock = pair()
    assert a.hold()
    clock.now += 10.5  # a paused past its lease
    assert b.hold()
    assert not a.hold()  # fenced: it sends nothing more
    clock.now += 5
    assert b.hold() and not a.hold()


def test_a_released_lease_is_taken_at_once() -> None:
    a, b, _ = pair()
    assert a.hold()
    a.release()
    assert b.hold() and not a.hold()


def test_an_unreadable_lease_counts_as_ended() -> None:
    a, b, _ = pair()
    a._store.put(KEY, b"not json")  # written by anything else
    assert b.hold() and not a.hold()


def test_of_two_taking_a_free_lease_at_once_one_wins() -> None:
    """Both read "nobody"; both write conditionally on that: one write succeeds."""
    store, clock = MemoryObjectStore(), Clock()
    a = Lease(store, KEY, holder="a", seconds=10, clock=clock)
    b = Lease(store, KEY, holder="b", seconds=10, clock=clock)
    assert a.hold()
    clock.now += 11
    found = store.read(KEY)
    assert found is not None
    version = found[1]
    # a renews on the version both read; b's write on the same version then fails.
    assert store.put(KEY, b'{"holder": "a", "until": 2000}', replacing=version)
    assert not store.put(KEY, b'{"holder": "b", "until": 2000}', replacing=version)
    assert not b.hold()


def test_the_lease_records_each_send_for_the_holder_that_takes_over() -> None:
    """The next holder knows when each task was last sent, by whom it was."""
    a, b, clock = pair()
    assert a.hold()
    a.note_sent("tick")
    sent_at = clock.now
    clock.now += 2
    assert a.hold()  # the renewal writes it
    a.release()
    assert b.hold()
    assert b.recorded == {"tick": sent_at}
