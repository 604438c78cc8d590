"""SNS subscriptions of SQS queues, behind one small interface.

The monitoring transport (:mod:`cloudworker.sqs.fanout`) subscribes receiver queues to
SNS topics through kombu. What the project itself needs of SNS is only this:
find the subscriptions of a crashed receiver's queue and remove them, so that
the reaper (:mod:`cloudworker.worker.reaper`) leaves no subscription pointing at nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

__all__ = ["MemoryTopicService", "SNSTopicService", "Subscription", "TopicService"]


@dataclass(frozen=True)
class Subscription:
    """An SQS queue subscribed to an SNS topic."""

    arn: str
    topic_arn: str
    queue_name: str


class TopicService(ABC):
    """The SNS operations the project uses."""

    @abstractmethod
    def queue_subscriptions(self, topic_prefix: str) -> list[Subscription]:
        """Every SQS subscription of the topics whose name starts with ``topic_prefix``."""

    @abstractmethod
    def unsubscribe(self, arn: str) -> None:
        """Remove subscription ``arn``."""


class SNSTopicService(TopicService):
    """:class:`TopicService` on Amazon SNS (a boto3 client)."""

    def __init__(self, sns: Any) -> None:
        self._sns = sns

    def queue_subscriptions(self, topic_prefix: str) -> list[Subscription]:
        found: list[Subscription] = []
        for page in self._sns.get_paginator("list_topics").paginate():
            for topic in page.get("Topics", []):
                arn = topic["TopicArn"]
                if not arn.rsplit(":", 1)[-1].startswith(topic_prefix):
                    continue
                subscriptions = self._sns.get_paginator("list_subscriptions_by_topic")
                for sub_page in subscriptions.paginate(TopicArn=arn):
                    found.extend(
                        Subscription(s["SubscriptionArn"], arn, s["Endpoint"].rsplit(":", 1)[-1])
                        for s in sub_page.get("Subscriptions", [])
                        if s.get("Protocol") == "sqs"
                    )
        return found

    def unsubscribe(self, arn: str) -> None:
        self._sns.unsubscribe(SubscriptionArn=arn)


class MemoryTopicService(TopicService):
    """In-memory :class:`TopicService` for unit tests."""

    def __init__(self) -> None:
        self.subscriptions: dict[str, Subscription] = {}

    def subscribe(self, topic: str, queue_name: str) -> str:
        arn = f"arn:sns:{topic}:{len(self.subscriptions)}"
        self.subscriptions[arn] = Subscription(arn, f"arn:sns:{topic}", queue_name)
        return arn

    def queue_subscriptions(self, topic_prefix: str) -> list[Subscription]:
        return [s for s in self.subscriptions.values() if s.topic_arn[8:].startswith(topic_prefix)]

    def unsubscribe(self, arn: str) -> None:
        self.subscriptions.pop(arn, None)
