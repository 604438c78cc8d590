"""The critical path's four SQS requests alone, with plain boto3: the floor as measured here.

The round trip's floor (:func:`bench.latency.floor`) is the sum of the model's medians for
send, receive, notice, receive. On this machine each of those requests also costs what the
endpoint, the proxies and boto3 take to serve it, on two shared cores: a cost AWS would
replace, not add to. This measures that path with nothing else on it: a client sends a
message through the client proxy; a responder in another process, long-polling through the
worker proxy, sends an answer to a second queue at once (and deletes the first message
after, as a worker acknowledges after its notice); the client's long poll receives it.
cloudworker's round trip set beside this, under the same latency model, is what cloudworker
itself adds to the least those four requests cost here.

    python -m bench.pingpong --n 30 --responder-endpoint http://127.0.0.1:PORT

The client's endpoint is ``AWS_ENDPOINT_URL``; the queues are made and deleted by the run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import boto3

from bench.client import emit, progress
from bench.measure import summarize

__all__ = ["measure_pingpong"]

_STOP = "stop"
_WAIT = 20


def _sqs(endpoint: str | None = None) -> Any:
    return boto3.session.Session().client(
        "sqs",
        endpoint_url=endpoint or os.environ["AWS_ENDPOINT_URL"],
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )


def respond(ping_url: str, pong_url: str) -> None:
    """Answer every message on ``ping_url`` with the same body on ``pong_url``, until "stop"."""
    sqs = _sqs()
    print("ready", flush=True)
    while True:
        messages = sqs.receive_message(
            QueueUrl=ping_url, WaitTimeSeconds=_WAIT, MaxNumberOfMessages=10
        ).get("Messages", [])
        for message in messages:
            if message["Body"] != _STOP:
                sqs.send_message(QueueUrl=pong_url, MessageBody=message["Body"])
            sqs.delete_message(QueueUrl=ping_url, ReceiptHandle=message["ReceiptHandle"])
            if message["Body"] == _STOP:
                return


def measure_pingpong(n: int, responder_endpoint: str) -> dict[str, Any]:
    """``n`` timed send, receive, answer, receive round trips (after one untimed)."""
    sqs = _sqs()
    suffix = uuid.uuid4().hex[:8]
    ping = sqs.create_queue(QueueName=f"bench-ping-{suffix}")["QueueUrl"]
    pong = sqs.create_queue(QueueName=f"bench-pong-{suffix}")["QueueUrl"]
    responder = subprocess.Popen(
        [sys.executable, "-m", "bench.pingpong", "--respond", ping, pong],
        env={**os.environ, "AWS_ENDPOINT_URL": responder_endpoint},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert responder.stdout is not None
        if responder.stdout.readline().strip() != "ready":
            raise RuntimeError("the responder did not start")
        samples = []
        for i in range(n + 1):
            started = time.perf_counter()
            sqs.send_message(QueueUrl=ping, MessageBody=str(i))
            answer = None
            while answer is None:
                for message in sqs.receive_message(
                    QueueUrl=pong, WaitTimeSeconds=_WAIT, MaxNumberOfMessages=1
                ).get("Messages", []):
                    answer = message
            elapsed = (time.perf_counter() - started) * 1000  # ms, as bench.roundtrip
            sqs.delete_message(QueueUrl=pong, ReceiptHandle=answer["ReceiptHandle"])
            if answer["Body"] != str(i):
                raise RuntimeError(f"answer {answer['Body']!r} to ping {i}")
            if i > 0:
                samples.append(elapsed)
        sqs.send_message(QueueUrl=ping, MessageBody=_STOP)
        responder.wait(30)
    finally:
        if responder.poll() is None:
            responder.kill()
        for url in (ping, pong):
            sqs.delete_queue(QueueUrl=url)
    report: dict[str, Any] = {"n": n, **summarize(samples)}
    progress(f"pingpong: p50 {report['p50'] * 1000:.1f} ms")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--responder-endpoint", default=None)
    parser.add_argument("--respond", nargs=2, metavar=("PING_URL", "PONG_URL"), default=None)
    args = parser.parse_args()
    if args.respond is not None:
        respond(*args.respond)
        return
    if args.responder_endpoint is None:
        parser.error("--responder-endpoint is required")
    emit(measure_pingpong(args.n, args.responder_endpoint))


if __name__ == "__main__":
    main()
