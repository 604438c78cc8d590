"""The local moto's FIFO long poll sees a message group freed during the poll, as SQS does.

moto's own receive notes the groups in flight once, when the poll starts, so the
poll below returned nothing after its whole wait (deploy/moto_server.py).
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
import pytest
from moto import mock_aws

from deploy import moto_server


def test_a_long_poll_gets_the_next_message_of_a_group_freed_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    looked_in_vain = threading.Event()

    def moto_receive(*args: Any) -> Any:
        found = original(*args)
        if not found:
            looked_in_vain.set()  # the poll has seen the group in flight
        return found

    original = moto_server._moto_receive
    monkeypatch.setattr(moto_server, "_moto_receive", moto_receive)
    # In-process moto only: a session's local stack may have set the endpoint.
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(
            QueueName="q.fifo",
            Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
        )["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="first", MessageGroupId="g")
        (first,) = sqs.receive_message(QueueUrl=url)["Messages"]  # its group now in flight
        sqs.send_message(QueueUrl=url, MessageBody="second", MessageGroupId="g")
        got: dict[str, Any] = {}
        poll = threading.Thread(
            target=lambda: got.update(sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20))
        )
        poll.start()
        assert looked_in_vain.wait(timeout=20)
        sqs.delete_message(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"])  # group freed
        poll.join()
    assert [m["Body"] for m in got["Messages"]] == ["second"]


def test_a_publish_reaches_the_live_queues_when_a_subscribed_queue_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """moto's own failed the whole Publish (NonExistentQueue); SNS drops that delivery."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_SNS"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        sns = boto3.client("sns", region_name="us-east-1")
        topic = sns.create_topic(Name="t")["TopicArn"]
        urls = [sqs.create_queue(QueueName=name)["QueueUrl"] for name in ("gone", "live")]
        for url in urls:
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn["Attributes"]["QueueArn"])
        sqs.delete_queue(QueueUrl=urls[0])
        sns.publish(TopicArn=topic, Message="hello")
        (received,) = sqs.receive_message(QueueUrl=urls[1])["Messages"]
    assert '"Message": "hello"' in received["Body"]
