"""Receiver queue names: pure rules, no AWS."""

from __future__ import annotations

import pytest

from cloudworker.sqs.receiver_names import MAX_QUEUE_NAME, ReceiverNames, incarnation

NAMES = ReceiverNames(prefix="cw-rx-")


def test_a_workers_control_queue_is_named_per_process() -> None:
    name = NAMES.queue_name("worker1@host.example.celery.pidbox")
    assert name == f"cw-rx-worker1_host-example-control-{incarnation()}"


def test_a_reply_queue_is_derived_the_same_in_every_process() -> None:
    oid = "3f2a1b6c-0000-4000-8000-000000000001"
    assert NAMES.queue_name(f"{oid}.reply.celery.pidbox") == f"cw-rx-{oid}-reply"
    # The worker finds it from the reply's exchange and routing key (the caller's oid).
    assert NAMES.reply_queue("reply.celery.pidbox", oid) == f"{oid}.reply.celery.pidbox"
    assert NAMES.reply_queue("celery.pidbox", oid) is None
    assert NAMES.reply_queue("reply.celery.pidbox", "") is None


def test_event_queues_are_receivers_and_known_as_such() -> None:
    name = "celeryev.5e7f0c1a-aaaa-bbbb-cccc-0123456789ab"
    assert NAMES.queue_name(name) == "cw-rx-events-5e7f0c1a-aaaa-bbbb-cccc-0123456789ab"
    assert NAMES.is_event_queue(name)
    assert not NAMES.is_event_queue("worker1@host.celery.pidbox")
    assert not NAMES.is_event_queue("celeryev")


@pytest.mark.parametrize("name", ["tasks", "celery.pidbox", "reply.celery.pidbox", "inbox"])
def test_other_queues_and_the_exchanges_themselves_are_not_receivers(name: str) -> None:
    assert NAMES.queue_name(name) is None


def test_long_names_are_shortened_with_a_digest_within_sqs_limit() -> None:
    long_a = NAMES.queue_name("w@" + "a" * 120 + ".celery.pidbox")
    long_b = NAMES.queue_name("w@" + "a" * 119 + "b.celery.pidbox")
    assert long_a is not None and long_b is not None
    assert len(long_a) <= MAX_QUEUE_NAME and len(long_b) <= MAX_QUEUE_NAME
    assert long_a != long_b
    assert long_a.startswith("cw-rx-w_aaa") and long_a.endswith(f"-{incarnation()}")


def test_another_control_namespace_and_event_prefix() -> None:
    names = ReceiverNames(prefix="p-rx-", control_namespace="ops", event_queue_prefix="ev")
    assert names.queue_name("n@h.ops.pidbox") == f"p-rx-n_h-control-{incarnation()}"
    assert names.queue_name("n@h.celery.pidbox") is None
    assert names.is_event_queue("ev.123") and not names.is_event_queue("celeryev.123")
