"""Reaping response queues abandoned by crashed clients."""

from __future__ import annotations

from config import Settings
from tasks.mailbox import CREATED_TAG, SEEN_TAG
from tasks.queues import MemoryQueueService
from tasks.reaper import reap

SETTINGS = Settings(queue_prefix="t-", response_queue_max_age=3600)


def test_reaps_only_idle_response_queues() -> None:
    queues = MemoryQueueService()
    now = 1_000_000
    queues.create("t-resp-old", attributes={}, tags={CREATED_TAG: str(now - 7200)})
    queues.create(
        "t-resp-refreshed",
        attributes={},
        tags={CREATED_TAG: str(now - 7200), SEEN_TAG: str(now - 60)},
    )
    queues.create("t-resp-new", attributes={}, tags={CREATED_TAG: str(now - 10)})
    queues.create("t-resp-untagged", attributes={}, tags={})
    queues.create("t-tasks", attributes={}, tags={CREATED_TAG: "1"})
    assert reap(queues, SETTINGS, now=now) == ["t-resp-old"]
    assert sorted(queues.queues) == ["t-resp-new", "t-resp-refreshed", "t-resp-untagged", "t-tasks"]


def test_max_age_zero_reaps_every_tagged_response_queue() -> None:
    queues = MemoryQueueService()
    queues.create("t-resp-a", attributes={}, tags={CREATED_TAG: "100"})
    assert reap(queues, SETTINGS, max_age=0, now=101) == ["t-resp-a"]
