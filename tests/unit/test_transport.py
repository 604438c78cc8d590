"""How the transport reads a task message's due time without parsing every message."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloudworker.sqs import _envelope_problem, _headers_of, _receive_count, seconds_until_due


class Channel:
    """Decodes bodies the way kombu's SQS channel does for base64 producers."""

    def _decode_python_message_body(self, body: str) -> bytes:
        return base64.b64decode(body) if not body.startswith("{") else body.encode()


def message(headers: dict[str, Any], *, encode: bool = False) -> dict[str, Any]:
    text = json.dumps({"body": "[[1], {}, {}]", "headers": headers, "properties": {}})
    return {"Body": base64.b64encode(text.encode()).decode() if encode else text}


def test_a_message_without_eta_is_not_parsed() -> None:
    assert _headers_of(Channel(), message({"task": "t", "eta": None})) is None  # type: ignore[arg-type]


def test_an_eta_is_found_in_plain_and_base64_messages() -> None:
    due = (datetime.now(UTC) + timedelta(seconds=100)).isoformat()
    for encode in (False, True):
        headers = _headers_of(Channel(), message({"eta": due}, encode=encode))  # type: ignore[arg-type]
        assert 95 < seconds_until_due(headers) <= 100


def test_past_or_missing_eta_is_due_now() -> None:
    past = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    assert seconds_until_due({"eta": past}) == 0
    assert seconds_until_due({"eta": "not a date"}) == 0
    assert seconds_until_due(None) == 0


def test_an_eta_in_a_message_too_deep_to_read_is_left_to_delivery() -> None:
    deep = '{"headers": {"eta": "2099-01-01T00:00:00"}, "x": ' + "[" * 5000 + "]" * 5000 + "}"
    assert _headers_of(Channel(), {"Body": deep}) is None  # type: ignore[arg-type]
    assert _headers_of(Channel(), {"Body": '["eta": "x"'}) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"body": "[]", "headers": {}, "properties": {"delivery_info": {}}}, None),
        ({}, None),  # not JSON: kombu delivers it as a raw body, and Celery refuses it
        ({"Records": []}, None),  # JSON not from kombu (an S3 event)
        ({"properties": []}, "properties must be a JSON object"),
        ({"properties": {}, "headers": [1]}, "headers must be dict"),
        ({"properties": {}, "body": 5}, "body must be str"),
        ({"properties": {}, "content-type": 5}, "content-type must be str"),
        ({"properties": {"delivery_info": "x"}}, "delivery_info must be dict"),
        ({"properties": {"priority": "high"}}, "priority must be int"),
        ({"properties": {"body_encoding": "rot13"}}, "unknown body_encoding 'rot13'"),
        ({"properties": {"body_encoding": "base64"}}, None),
    ],
)
def test_an_envelope_kombu_cannot_take_is_named(payload: Any, problem: str | None) -> None:
    assert _envelope_problem(payload) == problem


@pytest.mark.parametrize(
    ("attributes", "count"),
    [
        ({"ApproximateReceiveCount": "1"}, 1),
        ({"ApproximateReceiveCount": "3"}, 3),
        ({}, 1),  # not fetched: a first delivery, as far as anyone can tell
        ({"ApproximateReceiveCount": "many"}, 1),
        (None, 1),
    ],
)
def test_the_receive_count_is_read_from_the_message_attributes(attributes: Any, count: int) -> None:
    assert _receive_count({"Body": "{}", "Attributes": attributes}) == count
