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
    assert codec.claims is not None
    assert codec.claims.resolve(decoded) == [[image], {}]


def test_large_document_is_checked_in_whole_and_resolved_on_decode(
    codec: Codec, store: MemoryObjectStore
) -> None:
    numbers = list(range(1000))
    text = codec.dumps([[numbers], {}, None])
    assert json.loads(text)["__type__"] == "cloudworker.document"
    assert len(store.objects) == 1
    assert codec.loads(text) == [[numbers], {}, None]


def test_payload_prefix_sets_where_payloads_go(codec: Codec, store: MemoryObjectStore) -> None:
    with payload_prefix("results/abc/"):
        codec.dumps(b"x" * 5000)
    assert [k.startswith("results/abc/") for k in store.objects] == [True]


def test_tampered_payload_is_refused(codec: Codec, store: MemoryObjectStore) -> None:
    decoded = codec.loads(codec.dumps(b"y" * 5000))
    store.objects[decoded.key] = b"z" * 5000
    assert codec.claims is not None
    with pytest.raises(PayloadError, match="does not match its digest"):
        codec.claims.resolve(decoded)


def test_missing_payload_is_a_clear_error(codec: Codec, store: MemoryObjectStore) -> None:
    text = codec.dumps(list(range(1000)))
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
    assert codec.claims is not None
    assert codec.claims.resolve(numbers) is numbers
