"""The claim-check codec: large payloads go through the object store, verified."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tasks.codec import ClaimCheck, Codec, PayloadRef, payload_prefix
from tasks.errors import LimitExceeded, PayloadError
from tasks.objectstore import MemoryObjectStore


@pytest.fixture
def store() -> MemoryObjectStore:
    return MemoryObjectStore()


@pytest.fixture
def codec(store: MemoryObjectStore) -> Codec:
    return Codec(ClaimCheck(lambda: store, inline_max_bytes=1000, max_payload_bytes=10**6))


def test_small_values_stay_inline(codec: Codec, store: MemoryObjectStore) -> None:
    body = [[b"\x00\xffsmall", 3], {"n": Decimal("2.5"), "big": 2**100}, None]
    text = codec.dumps(body)
    assert store.objects == {}
    assert codec.loads(text) == [[b"\x00\xffsmall", 3], {"n": Decimal("2.5"), "big": 2**100}, None]


def test_large_bytes_are_checked_in_raw_and_come_back_lazily(
    codec: Codec, store: MemoryObjectStore
) -> None:
    image = bytes(range(256)) * 20  # 5120 bytes > 1000 inline
    text = codec.dumps([[image], {}])
    assert len(text) < 400
    (key,) = store.objects
    assert key.startswith("payloads/")
    assert store.objects[key] == image  # raw, not base64
    decoded = codec.loads(text)
    ref = decoded[0][0]
    assert isinstance(ref, PayloadRef)
    assert ref.size == len(image)
    assert codec.resolve(decoded) == [[image], {}]


def test_a_large_argument_becomes_a_lazy_json_reference(
    codec: Codec, store: MemoryObjectStore
) -> None:
    numbers = list(range(1000))
    text = codec.dumps([[numbers, 7], {"k": "v"}, None])
    message = json.loads(text)
    assert message[0][0]["__type__"] == "cloudworker.json"
    assert message[0][1:] == [7] and message[1:] == [{"k": "v"}, None]
    decoded = codec.loads(text)
    assert isinstance(decoded[0][0], PayloadRef)
    found: list[PayloadRef] = []
    assert codec.resolve(decoded, found) == [[numbers, 7], {"k": "v"}, None]
    assert [ref.key for ref in found] == list(store.objects)


def test_a_message_too_large_in_small_parts_is_stored_whole(
    codec: Codec, store: MemoryObjectStore
) -> None:
    body: list[object] = [list(range(1000)), {}, None]  # depth two holds only small integers
    text = codec.dumps(body)
    assert json.loads(text)["__type__"] == "cloudworker.document"
    assert len(store.objects) == 1
    assert codec.loads(text) == body


def test_bytes_are_uploaded_once_even_when_parts_are_checked_in(
    codec: Codec, store: MemoryObjectStore
) -> None:
    image = b"\x01" * 5000
    body: list[object] = [[image, list(range(1000))], {}, None]
    decoded = codec.loads(codec.dumps(body))
    assert len(store.objects) == 2  # the image once, the integer list once
    assert codec.resolve(decoded) == body


def test_payload_prefix_sets_where_payloads_go(codec: Codec, store: MemoryObjectStore) -> None:
    with payload_prefix("results/abc/"):
        codec.dumps(b"x" * 5000)
    assert [k.startswith("results/abc/") for k in store.objects] == [True]


def test_tampered_payload_is_refused(codec: Codec, store: MemoryObjectStore) -> None:
    decoded = codec.loads(codec.dumps(b"y" * 5000))
    store.objects[decoded.key] = b"z" * 5000
    with pytest.raises(PayloadError, match="does not match its digest"):
        codec.resolve(decoded)


def test_missing_payload_is_a_clear_error(codec: Codec, store: MemoryObjectStore) -> None:
    text = codec.dumps([list(range(1000))])
    store.objects.clear()
    with pytest.raises(PayloadError, match="missing or has expired"):
        codec.loads(text)


def test_payload_over_the_limit_is_refused_before_upload(store: MemoryObjectStore) -> None:
    codec = Codec(ClaimCheck(lambda: store, inline_max_bytes=100, max_payload_bytes=1000))
    with pytest.raises(LimitExceeded, match="over the limit of 1000"):
        codec.dumps(b"q" * 2000)
    assert store.objects == {}


def test_malformed_reference_is_a_payload_error(codec: Codec) -> None:
    with pytest.raises(PayloadError, match="malformed"):
        codec.loads('{"__type__": "cloudworker.payload", "__value__": {"key": "k"}}')


def test_resolve_leaves_plain_lists_alone(codec: Codec) -> None:
    numbers = list(range(10))
    assert codec.resolve(numbers) is numbers
