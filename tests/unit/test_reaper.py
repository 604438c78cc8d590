"""Reaping response queues abandoned by crashed clients."""

from __future__ import annotations

from cloudworker.queues import CREATED_TAG, SEEN_TAG, MemoryQueueService
from cloudworker.settings import Settings
from cloudworker.topics import MemoryTopicService
from cloudworker.worker.reaper import reap

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


def test_reaps_idle_receiver_queues_and_their_subscriptions() -> None:
    queues, topics = MemoryQueueService(), MemoryTopicService()
    now = 1_000_000
    queues.create("t-rx-events-dead", attributes={}, tags={CREATED_TAG: str(now - 7200)})
    queues.create("t-rx-events-live", attributes={}, tags={SEEN_TAG: str(now - 5)})
    dead = topics.subscribe("t-celeryev", "t-rx-events-dead")
    live = topics.subscribe("t-celeryev", "t-rx-events-live")
    gone_earlier = topics.subscribe("t-celery-pidbox", "t-rx-node-control-1234")  # no queue
    worker_task_queue = topics.subscribe("t-celeryev", "t-tasks")  # not a receiver's
    assert reap(queues, SETTINGS, topics=topics, now=now) == ["t-rx-events-dead"]
    assert sorted(queues.queues) == ["t-rx-events-live"]
    assert sorted(topics.subscriptions) == sorted([live, worker_task_queue])
    assert dead not in topics.subscriptions and gone_earlier not in topics.subscriptions


class _ListingMissesOne(MemoryQueueService):
    """Lists every queue but one (made after the listing) and counts URL look-ups."""

    def __init__(self, unlisted: str) -> None:
        super().__init__()
        self.unlisted, self.lookups = unlisted, 0

    def list_urls(self, prefix: str) -> list[str]:
        return [u for u in super().list_urls(prefix) if not u.endswith(self.unlisted)]

    def url_of(self, name: str) -> str:
        self.lookups += 1
        return super().url_of(name)


def test_subscriptions_are_checked_against_the_listing_and_a_newer_queue_is_kept() -> None:
    queues, topics = _ListingMissesOne("t-rx-events-new"), MemoryTopicService()
    now = 1_000_000
    for name in ("t-rx-events-a", "t-rx-events-b", "t-rx-events-new"):
        queues.create(name, attributes={}, tags={SEEN_TAG: str(now)})
        topics.subscribe("t-celeryev", name)
    assert reap(queues, SETTINGS, topics=topics, now=now) == []
    assert len(topics.subscriptions) == 3  # the queue made after the listing keeps its own
    assert queues.lookups == 1  # only that one was looked up; the listed ones cost nothing


def test_the_reaper_thread_starts_after_the_pool_has_forked() -> None:
    """A process forked while the reaper's thread is inside botocore could inherit a held lock."""
    from celery.worker import WorkController

    from cloudworker.application import create_app

    app = create_app(Settings())
    blueprint = WorkController.Blueprint(steps=app.steps["worker"])
    order = [step.name for step in blueprint._finalize_steps(blueprint.claim_steps())]
    assert order.index("cloudworker.worker.reaper.Reaper") > order.index(
        "celery.worker.components.Pool"
    )
