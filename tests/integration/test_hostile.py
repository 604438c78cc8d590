"""Hostile input: every bad argument or raw message gets a typed error or the DLQ, at once.

Each row is something a careless or hostile client can send: through the Python
API (refused by the client before anything is sent) or as a raw SQS message
sent with boto3 straight to the task queue (refused by the worker). Each row
says what must happen: the caller's typed error, the message in the dead-letter
queue with a reason, or both; and after every row a normal task must still be
answered, by the same single worker.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import NotRegistered

from client.numbers import int_to_text, parse_integers
from cloudworker.application import create_app
from cloudworker.errors import (
    InvalidArguments,
    InvalidImage,
    InvalidInput,
    InvalidMessage,
    InvalidNumbers,
    LimitExceeded,
    PayloadError,
)
from tests.integration.conftest import LocalStack
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
IMAGE = (ROOT / "examples" / "image.jpg").read_bytes()
DROP = object()  # a header or property left out of the message
DEEP = "<JSON nested 100,000 deep>"  # replaced in the message text (json.dumps cannot)


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth - 1):
        value = [value]
    return value


def nested_text(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@dataclass
class Raw:
    """A task message as Celery 5 sends it, with parts replaced."""

    task: Any = "tasks.compute_stats"
    args: Any = field(default_factory=lambda: [[1, 2, 3]])
    kwargs: Any = field(default_factory=dict)
    embed: Any = field(default_factory=dict)
    body: str | None = None  # the body text, instead of [args, kwargs, embed]
    headers: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    envelope: str | None = None  # the whole SQS body, instead of an envelope
    task_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def text(self, reply_to: str) -> str:
        if self.envelope is not None:
            return self.envelope.replace("TASK_ID", self.task_id)
        body = self.body
        if body is None:
            body = json.dumps([self.args, self.kwargs, self.embed])
        headers = {
            "lang": "py",
            "task": self.task,
            "id": self.task_id,
            "root_id": self.task_id,
            "parent_id": None,
            "group": None,
            "retries": 0,
            "timelimit": [None, None],
            "eta": None,
            "expires": None,
            "argsrepr": "",
            "kwargsrepr": "",
            "origin": "hostile-test",
            "ignore_result": False,
            **self.headers,
        }
        properties = {
            "correlation_id": self.task_id,
            "reply_to": reply_to,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": "tasks"},
            "priority": 0,
            "body_encoding": None,
            "delivery_tag": str(uuid.uuid4()),
            **self.properties,
        }
        text = json.dumps(
            {
                "body": body,
                "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": {k: v for k, v in headers.items() if v is not DROP},
                "properties": {k: v for k, v in properties.items() if v is not DROP},
            }
        )
        return text.replace(f'"{DEEP}"', nested_text(100_000))


@dataclass
class Expect:
    """What must come of a row: the caller's typed error, a dead letter, or both."""

    error: type[BaseException] | None = None
    message: str = ""  # a regular expression the error's message must match
    dead_letter: str | None = None  # a regular expression the dead letter's reason must match


def _forged_ref(stack: LocalStack, key: str) -> dict[str, Any]:
    data = stack.client("s3").get_object(Bucket=stack.settings.bucket, Key=key)["Body"].read()
    return {
        "__type__": "cloudworker.json",
        "__value__": {"key": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()},
    }


#: Raw messages, sent with boto3 to the task queue (the worker is the only guard).
RAW_ROWS: dict[str, tuple[Raw, Expect]] = {
    "argument nested 500 deep": (
        Raw(args=[nested(500)]),
        Expect(InvalidMessage, "nested deeper than 100", dead_letter="nested deeper than 100"),
    ),
    "stamped_headers holding a list": (
        Raw(headers={"stamped_headers": [[1]], "stamps": {}}),
        Expect(InvalidMessage, "stamped_headers must be a list of stamp names"),
    ),
    "stamped_headers holding an object": (
        Raw(headers={"stamped_headers": [{"a": 1}], "stamps": {}}),
        Expect(InvalidMessage, "stamped_headers must be a list of stamp names"),
    ),
    "a stamp Celery cannot compare": (
        Raw(headers={"stamped_headers": ["m"], "stamps": {"m": [{"a": 1}]}}),
        Expect(InvalidMessage, "stamps 'm' must be text, a number"),
    ),
    "a group id that cannot name a chord's objects": (
        Raw(headers={"group": "a/b c"}, embed={"chord": {"task": "x", "options": {}}}),
        Expect(InvalidMessage, "group must be 1 to 200 letters"),
    ),
    "body nested 5,000 deep": (
        Raw(body=nested_text(5000)),
        Expect(InvalidMessage, "nested deeper", dead_letter="nested deeper"),
    ),
    "envelope nested 100,000 deep": (
        Raw(headers={"junk": DEEP}),
        Expect(dead_letter="nested deeper than 100"),
    ),
    "whole message nested 100,000 deep": (
        Raw(envelope=nested_text(100_000)),
        Expect(dead_letter="nested deeper than 100"),
    ),
    "headers not an object": (
        Raw(
            envelope='{"body": "[[], {}, {}]", "headers": [1, 2], "properties": {}, "x": "TASK_ID"}'
        ),
        Expect(dead_letter="headers must be dict"),
    ),
    "properties not an object": (
        Raw(envelope='{"body": "[]", "headers": {"id": "TASK_ID"}, "properties": "p"}'),
        Expect(dead_letter="properties must be a JSON object"),
    ),
    "envelope a JSON array": (Raw(envelope='["TASK_ID", 1, 2]'), Expect(dead_letter="not a task")),
    "no task id": (Raw(headers={"id": DROP}), Expect(dead_letter="task id None")),
    "task id with a slash": (
        Raw(task_id="../results/x"),
        Expect(dead_letter="task id '../results/x'"),
    ),
    "task name not a string": (Raw(task=123), Expect(NotRegistered, dead_letter="unknown task")),
    "unknown task": (Raw(task="tasks.nope"), Expect(NotRegistered, dead_letter="unknown task")),
    "eta not a date": (
        Raw(headers={"eta": "tomorrow"}),
        Expect(InvalidMessage, "eta is not an ISO 8601", dead_letter="eta is not an ISO 8601"),
    ),
    "eta a number": (Raw(headers={"eta": 17}), Expect(InvalidMessage, "eta must be an ISO 8601")),
    "expires not a date": (
        Raw(headers={"expires": {"a": 1}}),
        Expect(InvalidMessage, "expires must be", dead_letter="expires must be"),
    ),
    "countdown not a number": (
        Raw(headers={"countdown": "soon"}),
        Expect(InvalidMessage, "countdown must be a number", dead_letter="countdown"),
    ),
    "retries negative": (Raw(headers={"retries": -1}), Expect(InvalidMessage, "retries must")),
    "retries a string": (Raw(headers={"retries": "2"}), Expect(InvalidMessage, "retries must")),
    "timelimit a string": (Raw(headers={"timelimit": "60"}), Expect(InvalidMessage, "timelimit")),
    "timelimit of three": (
        Raw(headers={"timelimit": [1, 2, 3]}),
        Expect(InvalidMessage, "timelimit"),
    ),
    "group_index a string": (Raw(headers={"group_index": "x"}), Expect(InvalidMessage, "group")),
    "argsrepr 100 KB": (
        Raw(headers={"argsrepr": "x" * 100_000}),
        Expect(InvalidMessage, "argsrepr"),
    ),
    "argsrepr with a lone surrogate": (
        Raw(headers={"argsrepr": "([\ud800],)"}),
        Expect(InvalidMessage, "argsrepr must be text"),
    ),
    "a header that would replace the chain": (
        Raw(headers={"chain": [{"task": "tasks.compute_stats", "args": [[1]]}]}),
        Expect(InvalidMessage, "header 'chain' is reserved"),
    ),
    "priority a string": (
        Raw(properties={"priority": "high"}),
        Expect(dead_letter="priority must be int"),
    ),
    "reply_to not text": (
        Raw(properties={"reply_to": ["a", "list"]}),
        Expect(dead_letter="reply_to must be str"),
    ),
    "unknown body encoding": (
        Raw(properties={"body_encoding": "rot13"}),
        Expect(dead_letter="unknown body_encoding"),
    ),
    "body not JSON": (
        Raw(body="[[1, 2], {}, {"),
        Expect(InvalidMessage, "cannot decode", dead_letter="cannot decode"),
    ),
    "body a JSON object": (
        Raw(body='{"args": [1]}'),
        Expect(InvalidMessage, r"\[args, kwargs, embed\]", dead_letter="args, kwargs, embed"),
    ),
    "args an object": (
        Raw(args={"numbers": [1]}),
        Expect(InvalidMessage, "args must be a list", dead_letter="args must be a list"),
    ),
    "kwargs a list": (Raw(kwargs=[1]), Expect(InvalidMessage, "kwargs must be an object")),
    "a callback that is not a signature": (
        Raw(embed={"callbacks": [{"x": 1}]}),
        Expect(InvalidMessage, "embed.callbacks"),
    ),
    "embed callbacks not signatures": (
        Raw(embed={"callbacks": [1, 2]}),
        Expect(InvalidMessage, "embed.callbacks", dead_letter="embed.callbacks"),
    ),
    "decimal integer of 5,000 digits": (
        Raw(body="[[[" + "7" * 5000 + "]], {}, {}]"),
        Expect(InvalidMessage, "too long", dead_letter="too long"),
    ),
    "malformed long-integer marker": (
        Raw(args=[[{"__type__": "cloudworker.int", "__value__": "zz"}]]),
        Expect(InvalidMessage, "malformed long integer", dead_letter="malformed long integer"),
    ),
    "kombu marker of the wrong type": (
        Raw(args=[[{"__type__": "datetime", "__value__": 5}]]),
        Expect(InvalidMessage, "cannot decode", dead_letter="cannot decode"),
    ),
    # -- arguments that decode but do not fit the task: the caller's error, no dead letter --
    "too few arguments": (Raw(args=[]), Expect(InvalidArguments, "missing a required argument")),
    "unknown keyword": (
        Raw(kwargs={"bogus": 1}),
        Expect(InvalidArguments, "unexpected keyword argument 'bogus'"),
    ),
    "numbers a string": (Raw(args=["1 2 3"]), Expect(InvalidNumbers, "got str")),
    "numbers holding a bool": (
        Raw(args=[[1, True]]),
        Expect(InvalidNumbers, "item 1 is not an integer"),
    ),
    "numbers nested 50 deep": (
        Raw(args=[[nested(50)]]),
        Expect(InvalidNumbers, "item 0 is not an integer"),
    ),
    "image a list": (
        Raw(task="tasks.grayscale_image", args=[[1, 2]]),
        Expect(InvalidImage, "image must be bytes"),
    ),
    "image format a number": (
        Raw(
            task="tasks.grayscale_image",
            args=[{"__type__": "base64", "__value__": "AAAA"}, 123],
        ),
        Expect(InvalidImage, "output format must be"),
    ),
    "inbox key outside the inbox": (
        Raw(task="tasks.process_inbox_object", args=["results/x.json"]),
        Expect(InvalidInput, "not an object under the inbox prefix"),
    ),
    "inbox key not a string": (
        Raw(task="tasks.process_inbox_object", args=[["inbox/a.jpg"]]),
        Expect(InvalidInput, "key must be an S3 key"),
    ),
    "payload reference to a result": (
        Raw(args=["FORGE:result"]),
        Expect(PayloadError, "outside payloads/"),
    ),
    "payload reference to another task's payload": (
        Raw(args=["FORGE:payload"]),
        Expect(PayloadError, "outside payloads/"),
    ),
    "payload reference with a bad digest": (
        Raw(args=[{"__type__": "cloudworker.payload", "__value__": {"key": "k", "size": 1}}]),
        Expect(InvalidMessage, "malformed payload reference"),
    ),
}


@pytest.fixture(scope="module")
def hostile(local_stack: LocalStack) -> Iterator[Hostile]:
    yield Hostile(local_stack)


class Hostile:
    """Sends rows and checks what came of them."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.sqs = stack.client("sqs")
        self.queue = stack.queue_url(stack.settings.task_queue_name)
        self.dlq = stack.queue_url(stack.settings.dead_letter_queue_name)
        self.mailbox = stack.app.services.mailbox
        #: Keys of objects forged references pointed at (they must survive).
        self.forged: list[str] = []
        #: Where this module's part of the worker's log starts.
        self.log_start = len(stack.worker_log())

    def send(self, raw: Raw) -> None:
        self.mailbox.expect(raw.task_id)
        self.sqs.send_message(QueueUrl=self.queue, MessageBody=raw.text(self.mailbox.name))

    def outcome(self, task_id: str) -> BaseException | Any:
        try:
            return self.stack.app.AsyncResult(task_id).get(timeout=30)
        except Exception as exc:
            return exc

    def dead_letter(self, marker: str, timeout: float = 30) -> dict[str, str] | None:
        """The reason of the dead letter whose body holds ``marker`` (deleted once found)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.sqs.receive_message(
                QueueUrl=self.dlq,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                VisibilityTimeout=0,
                MessageAttributeNames=["All"],
            )
            for message in response.get("Messages", []):
                if marker in message["Body"]:
                    self.sqs.delete_message(
                        QueueUrl=self.dlq, ReceiptHandle=message["ReceiptHandle"]
                    )
                    attributes = message.get("MessageAttributes", {})
                    return {k: v["StringValue"] for k, v in attributes.items()}
        return None

    def still_serving(self) -> None:
        numbers = [int(time.time()), 1, 2]
        answer = self.stack.tasks.compute_stats.delay(numbers).get(timeout=30)
        assert answer["median"] == 2
        assert self.stack.worker_alive()


def _check(hostile: Hostile, raw: Raw, expect: Expect) -> None:
    hostile.send(raw)
    if expect.error is not None:
        outcome = hostile.outcome(raw.task_id)
        assert isinstance(outcome, expect.error), repr(outcome)
        assert re.search(expect.message, str(outcome)), str(outcome)
    dead_letter = expect.dead_letter
    if dead_letter is None and expect.error in (InvalidMessage, NotRegistered):
        dead_letter = ""  # a broken message is dead-lettered as well as answered
    if dead_letter is not None:
        marker = (
            raw.task_id if raw.envelope is None or "TASK_ID" in raw.envelope else raw.envelope[:40]
        )
        letter = hostile.dead_letter(marker)
        assert letter is not None, "not in the dead-letter queue"
        assert letter["cloudworker.source"] == hostile.stack.settings.task_queue_name
        assert re.search(dead_letter, letter["cloudworker.reason"]), letter
    hostile.still_serving()


@pytest.mark.parametrize("row", list(RAW_ROWS))
def test_raw_message(hostile: Hostile, row: str) -> None:
    raw, expect = RAW_ROWS[row]
    forge = raw.args[0] if isinstance(raw.args, list) and raw.args else None
    if isinstance(forge, str) and forge.startswith("FORGE:"):
        raw.args = [_forge(hostile, forge.removeprefix("FORGE:"))]
    _check(hostile, raw, expect)


def _forge(hostile: Hostile, kind: str) -> dict[str, Any]:
    """A reference to an object a task must never read, which must still exist after."""
    stack = hostile.stack
    if kind == "result":
        done = stack.tasks.compute_stats.delay([4, 5, 6])
        done.get(timeout=30)
        key = f"results/{done.id}.json"
    else:
        key = f"payloads/{uuid.uuid4()}/{uuid.uuid4().hex}"
        stack.client("s3").put_object(Bucket=stack.settings.bucket, Key=key, Body=b"[[7, 8, 9]]")
    ref = _forged_ref(stack, key)
    hostile.forged.append(key)
    return ref


def test_a_refusal_naming_another_task_in_its_chain_does_not_fix_that_tasks_result(
    hostile: Hostile,
) -> None:
    """A message refused for its arguments fails the rest of its chain: the FAILURE it
    stored for a task named there stood for good (first write wins), and every reader of
    S3 got it, even after that task ran: now that task's own run replaces it."""
    stack = hostile.stack
    victim = str(uuid.uuid4())
    step = {
        "task": "tasks.compute_stats",
        "args": [[1]],
        "kwargs": {},
        "options": {"task_id": victim},
        "subtask_type": None,
        "immutable": True,
    }
    refused = Raw(args=["not numbers"], embed={"chain": [step]})
    # The refused message answers to a process of its own (the victim's caller is this one).
    sender = create_app(stack.settings)
    sender.services.mailbox.expect(refused.task_id)
    hostile.sqs.send_message(
        QueueUrl=hostile.queue, MessageBody=refused.text(sender.services.mailbox.name)
    )
    try:
        with pytest.raises(InvalidNumbers):
            sender.AsyncResult(refused.task_id).get(timeout=30)
    finally:
        sender.services.mailbox.close()
    reader = create_app(stack.settings)
    eventually(lambda: reader.AsyncResult(victim).state == "FAILURE", what="the chain failed")
    ran = stack.tasks.compute_stats.apply_async(([4, 5, 6],), task_id=victim)
    assert ran.get(timeout=30)["median"] == 5  # its caller had the real answer before too
    # What every other reader gets from S3, once the run's record is stored (its caller
    # may hear of it a few milliseconds before): the run's result, not the refusal's.
    fresh = create_app(stack.settings)  # reads S3 only: it sent nothing
    eventually(lambda: fresh.AsyncResult(victim).state == "SUCCESS", what="the run's result")
    assert fresh.AsyncResult(victim).get(timeout=30)["median"] == 5
    hostile.still_serving()


def test_forged_references_were_neither_read_nor_deleted(hostile: Hostile) -> None:
    """Runs after the rows above: each forged reference's object is still there."""
    s3 = hostile.stack.client("s3")
    assert len(hostile.forged) == 2
    for key in hostile.forged:
        assert s3.head_object(Bucket=hostile.stack.settings.bucket, Key=key)["ContentLength"] > 0


def test_one_bad_message_costs_no_other_message_its_run(hostile: Hostile) -> None:
    """A batch of nine valid tasks and one broken message: nine answers, one dead letter."""
    bad = Raw(envelope='{"x": "TASK_ID", "deep": ' + nested_text(100_000) + "}")
    good = [Raw(args=[[n, n + 1, n + 2]]) for n in range(9)]
    entries = []
    for index, raw in enumerate([*good[:4], bad, *good[4:]]):
        if raw is not bad:
            hostile.mailbox.expect(raw.task_id)
        entries.append({"Id": str(index), "MessageBody": raw.text(hostile.mailbox.name)})
    hostile.sqs.send_message_batch(QueueUrl=hostile.queue, Entries=entries)
    medians = [hostile.stack.app.AsyncResult(r.task_id).get(timeout=30)["median"] for r in good]
    assert medians == [n + 1 for n in range(9)]
    letter = hostile.dead_letter(bad.task_id)
    assert letter is not None
    assert "nested deeper than 100" in letter["cloudworker.reason"]


#: Arguments the client refuses before anything is sent: (call, error, message).
CLIENT_ROWS: dict[str, tuple[Callable[[Any], Any], type[BaseException], str]] = {
    "numbers nested 500 deep": (
        lambda t: t.compute_stats.delay(nested(500)),
        InvalidNumbers,
        "item 0 is not an integer",
    ),
    "numbers nested 5,000 deep": (
        lambda t: t.compute_stats.delay(nested(5000)),
        InvalidNumbers,
        "item 0",
    ),
    "numbers a dict": (lambda t: t.compute_stats.delay({"a": 1}), InvalidNumbers, "got dict"),
    "image format a number": (
        lambda t: t.grayscale_image.delay(IMAGE, 123),
        InvalidImage,
        "output format must be",
    ),
    "image a string": (lambda t: t.grayscale_image.delay("img"), InvalidImage, "must be bytes"),
    "image over the payload cap": (
        lambda t: t.grayscale_image.delay(b"x" * (256 * 1024 * 1024 + 1)),
        LimitExceeded,
        "over the limit",
    ),
    "wrong argument count": (lambda t: t.compute_stats.delay(), InvalidArguments, "missing"),
    "unknown keyword": (
        lambda t: t.compute_stats.delay([1], extra=2),
        InvalidArguments,
        "unexpected keyword",
    ),
    "a set through send_task": (
        lambda t: t.compute_stats.app.send_task("tasks.compute_stats", args=[{1, 2}]),
        InvalidArguments,
        "cannot be sent as JSON",
    ),
    "a value nested 500 deep through send_task": (
        lambda t: t.compute_stats.app.send_task("tasks.compute_stats", args=[nested(500)]),
        LimitExceeded,
        "nested deeper than 100",
    ),
    "a task id with a slash": (
        lambda t: t.compute_stats.apply_async(([1],), task_id="a/b"),
        InvalidMessage,
        "task id 'a/b'",
    ),
}


@pytest.mark.parametrize("row", list(CLIENT_ROWS))
def test_client_refuses(hostile: Hostile, row: str) -> None:
    call, error, message = CLIENT_ROWS[row]
    before = hostile.stack.queue_depth(hostile.stack.settings.task_queue_name)
    with pytest.raises(error, match=message):
        call(hostile.stack.tasks)
    # Nothing was sent (acknowledgements of earlier rows may still be draining).
    assert hostile.stack.queue_depth(hostile.stack.settings.task_queue_name) <= before
    hostile.still_serving()


def test_integers_of_any_size_end_to_end(hostile: Hostile, tmp_path: Path) -> None:
    big = 10**5000 + 3
    answer = hostile.stack.tasks.compute_stats.delay([big, -big, 7]).get(timeout=30)
    assert answer == {"count": 3, "mean": 7 / 3, "median": 7, "min": -big, "max": big}
    # The CLI: one file with such an integer, one bad file; per-file report, exit 2.
    good, bad = tmp_path / "big.txt", tmp_path / "bad.txt"
    good.write_text(f"{int_to_text(big)}\n{int_to_text(-big)}\n7\n")
    bad.write_text("1 2 x\n")
    out = hostile.stack.cli("stats", str(good), str(bad), "--json")
    assert out.returncode == 2, out.stderr
    (line,) = out.stdout.splitlines()
    assert json.loads(line, parse_int=lambda text: parse_integers(text.encode())[0]) == {
        "file": str(good),
        "count": 3,
        "mean": 7 / 3,
        "median": 7,
        "min": -big,
        "max": big,
    }
    assert f"{bad} line 1: 'x' is not an integer" in out.stderr


def test_dead_letter_tools_read_and_replay_any_message_once(hostile: Hostile) -> None:
    """``dlq list`` describes every kind of dead letter; ``dlq redrive`` replays each once."""
    stack, sqs = hostile.stack, hostile.sqs
    while hostile.dead_letter("", timeout=2) is not None:  # start from an empty queue
        pass
    source = stack.settings.task_queue_name
    still_bad = Raw(headers={"eta": "tomorrow"})
    letters = {
        "deep": (nested_text(100_000), source),
        "not JSON": ("not json at all \u2603 {", source),
        "headers a list": ('{"headers": [1], "content-type": 5, "properties": 3}', source),
        "still bad": (still_bad.text(hostile.mailbox.name), source),
        "from elsewhere": ('{"headers": {"task": "x"}}', "someone-elses-queue"),
    }
    for body, origin in letters.values():
        sqs.send_message(
            QueueUrl=hostile.dlq,
            MessageBody=body,
            MessageAttributes={
                "cloudworker.source": {"DataType": "String", "StringValue": origin},
                "cloudworker.reason": {"DataType": "String", "StringValue": "test"},
            },
        )
    listed = stack.cli("dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    described = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(described) == 5
    assert {d["task"] for d in described} == {"", "tasks.compute_stats", "x"}
    assert {d["reason"] for d in described} == {"test"}
    assert stack.cli("dlq", "list").returncode == 0

    replayed = stack.cli("dlq", "redrive")
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.splitlines() == [
        "sent 4 dead letter(s) back to their queue",
        "kept 1 (sent back during this run, or from an unknown queue)",
    ]
    # The worker refuses the four again, once each: five dead letters, not a loop.
    assert stack.wait_for_depth(stack.settings.dead_letter_queue_name, 5)
    # Nothing left in the task queue to come back: the refusals were final.
    assert stack.wait_for_depth(stack.settings.task_queue_name, 0)
    assert stack.queue_depth(stack.settings.dead_letter_queue_name) == 5
    again = stack.cli("dlq", "list", "--json")
    reasons = sorted(json.loads(line)["reason"] for line in again.stdout.splitlines())
    assert reasons.count("test") == 1  # the foreign one, untouched
    assert any("eta is not an ISO 8601" in reason for reason in reasons)
    assert any("nested deeper than 100" in reason for reason in reasons)
    while hostile.dead_letter("", timeout=2) is not None:
        pass
    hostile.still_serving()


def test_refusals_cost_no_traceback_in_the_worker_log(hostile: Hostile) -> None:
    """Runs last: every refusal above was logged as a warning, none as an error or a traceback."""
    log = hostile.stack.worker_log()[hostile.log_start :]
    assert "refused a message" in log
    assert "ERROR/" not in log, log[log.find("ERROR/") - 300 :][:3000]
    assert "Traceback" not in log, log[log.find("Traceback") - 500 :][:3000]
