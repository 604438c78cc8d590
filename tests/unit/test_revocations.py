"""Stored revocations: their keys, which are still in force, what a worker loads, what the
client writes before it broadcasts (on the in-memory object store; nothing is broadcast)."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from celery import signals
from celery.app import control as celery_control
from celery.result import AsyncResult, GroupResult
from celery.utils.collections import LimitedSet
from celery.worker import state as worker_state

from cloudworker.application import CloudworkerCelery, create_app
from cloudworker.errors import InvalidArguments, InvalidMessage
from cloudworker.keys import REVOKED_IDS, revoked_id_key, revoked_stamped_key, revoked_task_id
from cloudworker.objectstore import Listed, MemoryObjectStore
from cloudworker.queues import MemoryQueueService
from cloudworker.services import Services
from cloudworker.settings import Settings
from cloudworker.worker.revocations import (
    Control,
    StoredRevocations,
    _merge_stamps,
    load_into_worker_state,
    refresh_stamped,
    remember,
    remember_stamped,
    stamped_headers,
    unexpired,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
EXPIRES = 10_800.0


def aged(store: MemoryObjectStore, key: str, seconds: float) -> None:
    """Make ``key`` look written ``seconds`` before :data:`NOW`."""
    store.written[key] = NOW - timedelta(seconds=seconds)


# -- keys -----------------------------------------------------------------------------------


def test_a_revoked_id_key_names_its_task_and_back() -> None:
    assert revoked_id_key("d3b07384-d113-4ec6-a3c4-6d1c2f1a8f1e") == (
        "revoked/ids/d3b07384-d113-4ec6-a3c4-6d1c2f1a8f1e"
    )
    assert revoked_task_id(revoked_id_key("my:task@1")) == "my:task@1"


@pytest.mark.parametrize("task_id", ["a/b", "", "with space", "x" * 201, None])
def test_a_task_id_that_cannot_be_a_key_is_refused(task_id: Any) -> None:
    with pytest.raises(InvalidMessage):
        revoked_id_key(task_id)


@pytest.mark.parametrize(
    "key",
    [
        "revoked/stamped/" + "0" * 64 + ".json",
        "revoked/ids/a/b",
        "revoked/ids/",
        "results/abc.json",
        "revoked/abc",
    ],
)
def test_only_a_revoked_id_key_gives_a_task_id(key: str) -> None:
    assert revoked_task_id(key) is None


def test_a_stamped_revocation_is_named_by_its_content() -> None:
    first = revoked_stamped_key(b'{"headers":{"mtask_id":["a"]}}')
    assert first == revoked_stamped_key(b'{"headers":{"mtask_id":["a"]}}')
    assert first != revoked_stamped_key(b'{"headers":{"mtask_id":["b"]}}')
    assert first.startswith("revoked/stamped/") and first.endswith(".json")
    assert len(first) == len("revoked/stamped/") + 64 + len(".json")


# -- which revocations are still in force ----------------------------------------------------


def listed(*ages: float) -> list[Listed]:
    return [Listed(f"revoked/ids/t{age}", NOW - timedelta(seconds=age)) for age in ages]


def test_unexpired_keeps_those_younger_than_expires_oldest_first_with_their_ages() -> None:
    kept = unexpired(listed(5, 10_799, 10_800, 20_000, 0), now=NOW, expires=EXPIRES)
    assert [(item.key, age) for item, age in kept] == [
        ("revoked/ids/t10799", 10_799.0),
        ("revoked/ids/t5", 5.0),
        ("revoked/ids/t0", 0.0),
    ]


def test_a_revocation_stamped_ahead_of_the_local_clock_is_new() -> None:
    (kept,) = unexpired(listed(-30), now=NOW, expires=EXPIRES)
    assert kept[1] == 0.0


# -- what a worker loads ---------------------------------------------------------------------


def test_a_worker_loads_unexpired_ids_and_stamps_and_skips_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryObjectStore()
    assert remember(store, ["fresh", "old", "gone"]) == 3
    aged(store, revoked_id_key("fresh"), 60)
    aged(store, revoked_id_key("old"), EXPIRES - 120)
    aged(store, revoked_id_key("gone"), EXPIRES + 1)
    remember_stamped(store, {"mtask_id": "m1"})
    remember_stamped(store, {"mtask_id": ["m2", "m1"], "other": 7})
    store.put("revoked/stamped/" + "f" * 64 + ".json", b"not json")
    for key in store.objects:
        if key.startswith("revoked/stamped/"):
            aged(store, key, 30)
    store.put("revoked/ids/a/b", b"")  # not a task id: ignored
    aged(store, "revoked/ids/a/b", 1)

    revoked = LimitedSet(maxlen=100, expires=EXPIRES)
    stamps: dict[str, Any] = {"mtask_id": "m0"}  # revoked by broadcast before
    with caplog.at_level(logging.WARNING):
        loaded = load_into_worker_state(
            store, now=NOW, expires=EXPIRES, revoked=revoked, revoked_stamps=stamps
        )

    assert (loaded.ids, loaded.stamped) == (2, 2)
    assert sorted(revoked) == ["fresh", "old"]
    assert stamps["mtask_id"][0] == "m0" and sorted(stamps["mtask_id"]) == ["m0", "m1", "m2"]
    assert stamps["other"] == [7]
    assert "ignoring stored revocation revoked/stamped/ffff" in caplog.text


def test_a_loaded_id_expires_when_it_would_have_on_a_worker_that_heard_it() -> None:
    store = MemoryObjectStore()
    remember(store, ["old"])
    aged(store, revoked_id_key("old"), EXPIRES - 100)  # 100 s of it left
    revoked = LimitedSet(maxlen=100, expires=EXPIRES)
    load_into_worker_state(store, now=NOW, expires=EXPIRES, revoked=revoked, revoked_stamps={})
    revoked.purge(now=time.monotonic() + 90)
    assert "old" in revoked
    revoked.purge(now=time.monotonic() + 110)
    assert "old" not in revoked


def test_the_defaults_are_celerys_revoked_set_and_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    revoked, stamps = LimitedSet(maxlen=100, expires=60), dict[str, Any]()
    monkeypatch.setattr(worker_state, "revoked", revoked)
    monkeypatch.setattr(worker_state, "revoked_stamps", stamps)
    monkeypatch.setattr(worker_state, "REVOKE_EXPIRES", 60.0)
    store = MemoryObjectStore()
    remember(store, ["young", "older"])
    remember_stamped(store, ["mtask_id=m1"])  # as `celery control revoke_by_stamped_headers`
    for key in store.objects:
        aged(store, key, 10)
    aged(store, revoked_id_key("older"), 61)
    loaded = load_into_worker_state(store, now=NOW)
    assert (loaded.ids, loaded.stamped) == (1, 1)
    assert list(revoked) == ["young"]
    assert stamps == {"mtask_id": ["m1"]}


def test_the_bootstep_loads_and_says_how_many(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    revoked = LimitedSet(maxlen=100, expires=EXPIRES)
    monkeypatch.setattr(worker_state, "revoked", revoked)
    monkeypatch.setattr(worker_state, "revoked_stamps", {})
    store = MemoryObjectStore()
    remember(store, ["t1", "t2"])
    parent = SimpleNamespace(app=SimpleNamespace(services=SimpleNamespace(store=lambda: store)))
    with caplog.at_level(logging.INFO):
        StoredRevocations(parent).start(parent)
    assert sorted(revoked) == ["t1", "t2"]
    assert "loaded 2 revoked task id(s) and 0 revocation(s) by stamped headers" in caplog.text


def test_a_worker_that_cannot_read_them_says_so_and_starts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(MemoryObjectStore):
        def list(self, prefix: str) -> list[Listed]:
            raise OSError("endpoint down")

    store = Broken()
    parent = SimpleNamespace(app=SimpleNamespace(services=SimpleNamespace(store=lambda: store)))
    with caplog.at_level(logging.ERROR):
        StoredRevocations(parent).start(parent)  # no exception
    assert "could not load the stored revocations" in caplog.text


# -- a stamped task received: the revocations by stamped headers stored since ---------------


def test_refresh_merges_each_stored_stamped_revocation_once() -> None:
    store = MemoryObjectStore()
    remember_stamped(store, {"monitoring_id": "early"})
    aged(store, next(iter(store.objects)), 5)
    merged: set[tuple[str, datetime]] = set()
    stamps: dict[str, Any] = {}
    load_into_worker_state(
        store, now=NOW, expires=EXPIRES, revoked=LimitedSet(), revoked_stamps=stamps, merged=merged
    )
    assert stamps == {"monitoring_id": ["early"]} and len(merged) == 1
    stamps.clear()  # the worker forgets them (Celery's tests do this between cases)
    remember_stamped(store, {"monitoring_id": "late"})  # revoked after the worker started
    remember_stamped(store, {"monitoring_id": "expired"})
    aged(store, revoked_stamped_key(b'{"headers":{"monitoring_id":["late"]}}'), 1)
    aged(store, revoked_stamped_key(b'{"headers":{"monitoring_id":["expired"]}}'), EXPIRES + 1)
    added = refresh_stamped(store, merged, now=NOW, expires=EXPIRES, revoked_stamps=stamps)
    assert added == 1
    assert stamps == {"monitoring_id": ["late"]}  # not "early" again, not the expired one
    assert refresh_stamped(store, merged, now=NOW, expires=EXPIRES, revoked_stamps=stamps) == 0


def test_the_same_headers_revoked_again_later_are_merged_again() -> None:
    store = MemoryObjectStore()
    remember_stamped(store, {"monitoring_id": "4242"})
    key = next(iter(store.objects))
    aged(store, key, 60)
    merged: set[tuple[str, datetime]] = set()
    stamps: dict[str, Any] = {}
    assert refresh_stamped(store, merged, now=NOW, expires=EXPIRES, revoked_stamps=stamps) == 1
    stamps.clear()  # the worker forgets them, then the client revokes the same headers again
    remember_stamped(store, {"monitoring_id": "4242"})  # the same key, written anew
    aged(store, key, 1)
    assert refresh_stamped(store, merged, now=NOW, expires=EXPIRES, revoked_stamps=stamps) == 1
    assert stamps == {"monitoring_id": ["4242"]}


class Consumer:
    """A worker's consumer, as the sender of ``task_received`` (signal senders are hashed)."""

    def __init__(self, app: Any) -> None:
        self.app = app


def test_a_received_stamped_task_is_checked_against_revocations_stored_after_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stamps: dict[str, Any] = {}
    monkeypatch.setattr(worker_state, "revoked", LimitedSet(maxlen=100, expires=EXPIRES))
    monkeypatch.setattr(worker_state, "revoked_stamps", stamps)
    store = MemoryObjectStore()
    lists: list[str] = []
    original = store.list

    def counting(prefix: str) -> list[Listed]:
        lists.append(prefix)
        return original(prefix)

    store.list = counting  # type: ignore[method-assign]
    app = SimpleNamespace(services=SimpleNamespace(store=lambda: store))
    step = StoredRevocations(SimpleNamespace(app=app))
    step.start(SimpleNamespace(app=app))
    try:
        remember_stamped(store, {"monitoring_id": "m1"})  # its broadcast is still on its way
        consumer, other = Consumer(app), Consumer(object())
        lists.clear()
        signals.task_received.send(sender=consumer, request=SimpleNamespace(stamped_headers=None))
        signals.task_received.send(
            sender=other, request=SimpleNamespace(stamped_headers=["monitoring_id"])
        )
        assert lists == [] and stamps == {}  # unstamped, or another worker's: no request
        signals.task_received.send(
            sender=consumer, request=SimpleNamespace(stamped_headers=["monitoring_id"])
        )
        assert stamps == {"monitoring_id": ["m1"]}
    finally:
        step.stop(SimpleNamespace(app=app))
    lists.clear()
    signals.task_received.send(
        sender=consumer, request=SimpleNamespace(stamped_headers=["monitoring_id"])
    )
    assert lists == []  # a stopped worker no longer listens


# -- stamped headers as Celery takes them ----------------------------------------------------


def test_stamped_headers_are_names_to_lists_of_values() -> None:
    assert stamped_headers({"a": "1", "b": [2, 3]}) == {"a": ["1"], "b": [2, 3]}
    assert stamped_headers(["a=1", "b=x=y"]) == {"a": ["1"], "b": ["x=y"]}  # the CLI's form


@pytest.mark.parametrize("headers", [["no-equals"], "a=1", 5, {1: "x"}])
def test_stamped_headers_of_another_shape_are_refused(headers: Any) -> None:
    with pytest.raises(InvalidArguments):
        stamped_headers(headers)


# -- the client writes before it broadcasts --------------------------------------------------


Client = tuple[CloudworkerCelery, MemoryObjectStore]


@pytest.fixture
def client() -> Client:
    store = MemoryObjectStore()
    settings = Settings()
    services = Services(settings, store=lambda: store, queues=MemoryQueueService)
    return create_app(settings, services=services), store


@pytest.fixture
def broadcasts(monkeypatch: pytest.MonkeyPatch, client: Client) -> list[tuple[Any, ...]]:
    """What Celery's broadcast was asked to send, with the revocations stored by then."""
    _, store = client
    sent: list[tuple[Any, ...]] = []

    def broadcast(self: Any, command: str, arguments: Any = None, destination: Any = None,
                  *args: Any, **kwargs: Any) -> None:  # fmt: skip
        stored = sorted(key for key in store.objects if key.startswith("revoked/"))
        sent.append((command, arguments, destination, stored))

    monkeypatch.setattr(celery_control.Control, "broadcast", broadcast)
    return sent


def ids_stored(store: MemoryObjectStore) -> list[str]:
    return sorted(key[len(REVOKED_IDS) :] for key in store.objects if key.startswith(REVOKED_IDS))


def test_the_apps_control_is_cloudworkers(client: Client) -> None:
    assert isinstance(client[0].control, Control)


def test_every_way_to_revoke_writes_to_s3_before_it_broadcasts(
    client: Client,
    broadcasts: list[tuple[Any, ...]],
) -> None:
    app, store = client
    app.control.revoke("t1")
    AsyncResult("t2", app=app).revoke(terminate=True)
    GroupResult("g", [AsyncResult("t3", app=app), AsyncResult("t4", app=app)], app=app).revoke()
    app.control.broadcast("revoke", arguments={"task_id": ["t5"]})  # celery control revoke
    app.control.broadcast("terminate", arguments={"signal": "KILL", "task_id": ["t6"]})
    app.control.broadcast("rate_limit", arguments={"task_name": "t", "rate_limit": "1/s"})
    assert ids_stored(store) == ["t1", "t2", "t3", "t4", "t5", "t6"]
    assert [(command, stored) for command, _, _, stored in broadcasts] == [
        ("revoke", ["revoked/ids/t1"]),
        ("revoke", ["revoked/ids/t1", "revoked/ids/t2"]),
        ("revoke", [f"revoked/ids/t{n}" for n in range(1, 5)]),
        ("revoke", [f"revoked/ids/t{n}" for n in range(1, 6)]),
        ("terminate", [f"revoked/ids/t{n}" for n in range(1, 7)]),
        ("rate_limit", [f"revoked/ids/t{n}" for n in range(1, 7)]),
    ]
    assert broadcasts[1][1]["terminate"] is True


def test_a_revocation_by_stamped_headers_is_stored_as_the_worker_reads_it(
    client: Client,
    broadcasts: list[tuple[Any, ...]],
) -> None:
    app, store = client
    app.control.revoke_by_stamped_headers({"mtask_id": "m1"})
    (key,) = broadcasts[0][3]
    assert json.loads(store.objects[key]) == {"headers": {"mtask_id": ["m1"]}}
    assert broadcasts[0][:2] == (
        "revoke_by_stamped_headers",
        {
            "headers": {"mtask_id": "m1"},
            "terminate": False,
            "signal": "SIGTERM",
            "cloudworker_stored": key,  # which write it is (Celery's command ignores it)
        },
    )


def test_a_revocation_for_named_workers_only_is_theirs_alone(
    client: Client,
    broadcasts: list[tuple[Any, ...]],
) -> None:
    app, store = client
    app.control.revoke("t1", destination=["worker1@host"])
    assert ids_stored(store) == []
    assert broadcasts[0][2] == ["worker1@host"]


def test_an_id_that_cannot_be_stored_is_refused_before_anything_is_sent(
    client: Client,
    broadcasts: list[tuple[Any, ...]],
) -> None:
    app, store = client
    with pytest.raises(InvalidMessage):
        app.control.revoke(["ok", "not/ok"])
    assert ids_stored(store) == [] and broadcasts == []


def test_many_ids_are_all_stored() -> None:
    store = MemoryObjectStore()
    ids = [f"t{n}" for n in range(100)]
    assert remember(store, ids) == 100
    assert ids_stored(store) == sorted(ids)


def test_an_unreadable_stored_revocation_is_skipped_and_not_the_ones_after_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 100,000-deep JSON raised RecursionError out of the load: every revocation
    listed after it was skipped, and a task revoked then ran on a restarted worker."""
    store = MemoryObjectStore()
    deep = b'{"headers": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    store.put("revoked/stamped/" + "0" * 64 + ".json", deep)
    store.put("revoked/stamped/" + "1" * 64 + ".json", b"\xff\xfe not utf-8")
    remember_stamped(store, {"mtask_id": "after"})
    remember(store, ["revoked-after"])
    for key in store.objects:
        aged(store, key, 30)
    revoked = LimitedSet(maxlen=100, expires=EXPIRES)
    stamps: dict[str, Any] = {}
    with caplog.at_level(logging.WARNING):
        loaded = load_into_worker_state(
            store, now=NOW, expires=EXPIRES, revoked=revoked, revoked_stamps=stamps
        )
    assert (loaded.ids, loaded.stamped) == (1, 1)
    assert list(revoked) == ["revoked-after"]
    assert stamps == {"mtask_id": ["after"]}
    assert caplog.text.count("ignoring stored revocation") == 2


class Counted(str):
    """A stamp value that counts the comparisons made with it."""

    comparisons = 0

    def __eq__(self, other: object) -> bool:
        Counted.comparisons += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_merging_stamps_takes_linear_time() -> None:
    """Three revocations of 12,000 values each blocked a worker for 3 s: each value was
    looked up in the list of those known (quadratic). Now a set: about no comparisons."""
    known = [Counted(f"v{n}") for n in range(3_000)]
    stamps: dict[str, Any] = {"m": list(known)}
    Counted.comparisons = 0
    _merge_stamps(stamps, {"m": [Counted(f"v{n}") for n in range(1_500, 4_500)] + [[1], [1]]})
    assert Counted.comparisons < 3_000  # a list lookup per value made about 6.75 million
    assert len(stamps["m"]) == 4_500 + 1  # v0..v4499 and [1], each once
    assert stamps["m"].count([1]) == 1


# -- a broadcast too large for a message --------------------------------------------------------


def test_a_revocation_too_large_for_a_message_reaches_the_workers_pidbox(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """5,000 ids or more went to S3 as the codec does for any large message, and the
    worker's pidbox got the reference itself: running workers ignored the revocation."""
    from celery.utils.collections import AttributeDict

    from cloudworker import codec
    from cloudworker.keys import control_payload_prefix, task_payload_prefix

    store = MemoryObjectStore()
    settings = Settings(inline_max_bytes=2000)
    services = Services(settings, store=lambda: store, queues=MemoryQueueService)
    app = create_app(settings, services=services)
    ids = [f"task-{n}" for n in range(5000)]
    heard: list[Any] = []
    node = app.control.mailbox.Node(
        "w@h",
        state=AttributeDict(app=app),
        handlers={"revoke": lambda state, task_id, **_: heard.append(task_id)},
    )
    for prefix, expected in ((control_payload_prefix(), [ids]), (task_payload_prefix("t1"), [])):
        heard.clear()
        with codec.payload_prefix(prefix):
            text = services.codec.dumps({"method": "revoke", "arguments": {"task_id": ids}})
        assert len(text) < 2000  # the ids went to S3
        with caplog.at_level(logging.WARNING):
            node.handle_message(services.codec.loads(text))
        assert heard == expected
    # A reference to another task's arguments is never read for a control command.
    assert "ignored control command 'revoke'" in caplog.text


def test_a_late_broadcast_of_a_revocation_merged_from_s3_does_not_bring_it_back(
    monkeypatch: pytest.MonkeyPatch, broadcasts: list[tuple[Any, ...]], client: Client
) -> None:
    """The stamped task came before the broadcast, so the worker merged the revocation
    from S3; the stamps were cleared (as Celery's tests do after each case); then the
    broadcast came and revoked the next task carrying those stamps (a flaky test_tasks
    case). The broadcast names the stored write, and the worker merges it once."""
    from celery.utils.collections import AttributeDict
    from celery.worker import control as worker_control

    app, _ = client
    stamps: dict[str, Any] = {}
    monkeypatch.setattr(worker_state, "revoked_stamps", stamps)
    app.control.revoke_by_stamped_headers({"monitoring_id": ["m1"]})
    (command, arguments, _, _) = broadcasts[-1]
    assert command == "revoke_by_stamped_headers"
    assert arguments["cloudworker_stored"].startswith("revoked/stamped/")
    step = StoredRevocations(SimpleNamespace(app=app))
    step.start(SimpleNamespace(app=app))
    handler = worker_control.Panel.data["revoke_by_stamped_headers"]
    state = AttributeDict(app=app, consumer=None)
    try:
        signals.task_received.send(
            sender=Consumer(app), request=SimpleNamespace(stamped_headers=["monitoring_id"])
        )
        assert stamps == {"monitoring_id": ["m1"]}  # merged from S3, before the broadcast
        stamps.clear()
        handler(state, **arguments)  # the broadcast, late
        assert stamps == {}
        handler(state, headers={"monitoring_id": ["m2"]})  # one not merged from S3
        assert stamps == {"monitoring_id": ["m2"]}
    finally:
        step.stop(SimpleNamespace(app=app))
