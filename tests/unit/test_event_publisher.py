"""Events go to SNS in batches from a thread; a full queue or a failing SNS drops them."""

from __future__ import annotations

import threading
from itertools import chain
from typing import Any

from cloudworker.sqs.event_publisher import BatchPublisher


class FakeSNS:
    """Records PublishBatch calls; can hold them, or refuse them."""

    def __init__(self, *, fail: bool = False) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.release = threading.Event()
        self.release.set()
        self.fail = fail

    def publish_batch(
        self, TopicArn: str, PublishBatchRequestEntries: list[dict[str, Any]]
    ) -> Any:  # boto3's names
        assert self.release.wait(5)
        if self.fail:
            raise OSError("SNS is down")
        self.calls.append((TopicArn, [e["Message"] for e in PublishBatchRequestEntries]))
        return {"Successful": [], "Failed": []}


def arn(exchange: str) -> str:
    return f"arn:aws:sns:us-east-1:0:{exchange}"


def test_events_for_one_topic_share_batches_of_ten() -> None:
    sns = FakeSNS()
    publisher = BatchPublisher(sns, arn)
    for i in range(12):
        publisher.submit("celeryev", f"e{i}")
    publisher.submit("control", "c0")
    publisher.close()
    events = [messages for topic, messages in sns.calls if topic == arn("celeryev")]
    assert [len(m) for m in events] == [10, 2]
    assert list(chain(*events)) == [f"e{i}" for i in range(12)]
    assert [m for topic, m in sns.calls if topic == arn("control")] == [["c0"]]
    assert publisher.dropped == 0


def test_events_beyond_the_capacity_are_dropped_and_counted() -> None:
    sns = FakeSNS()
    sns.release.clear()  # SNS hangs: nothing leaves
    publisher = BatchPublisher(sns, arn, capacity=3)
    for i in range(5):
        publisher.submit("celeryev", f"e{i}")
    assert publisher.dropped == 2
    sns.release.set()
    publisher.close()
    assert list(chain(*(m for _, m in sns.calls))) == ["e0", "e1", "e2"]


def test_a_failing_sns_drops_the_events_and_the_publisher_goes_on() -> None:
    sns = FakeSNS(fail=True)
    publisher = BatchPublisher(sns, arn)
    publisher.submit("celeryev", "lost")
    publisher.close()
    assert publisher.dropped == 1
    sns.fail = False
    publisher.submit("celeryev", "after")  # a closed publisher starts again
    publisher.close()
    assert sns.calls == [(arn("celeryev"), ["after"])]
