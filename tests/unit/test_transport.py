"""How the transport reads a task message's due time without parsing every message."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from tasks.transport import _headers_of, seconds_until_due


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
