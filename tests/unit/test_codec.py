"""The claim-check codec: large payloads go through the object store, verified."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

import pytest

from cloudworker.codec import (
    MAX_DEPTH,
    ClaimCheck,
    Codec,
    PayloadRef,
    check_depth,
    loggable,
    payload_prefix,
)
from cloudworker.errors import InvalidArguments, LimitExceeded, PayloadError
from cloudworker.objectstore import MemoryObjectStore


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
    assert codec.resolve(decoded, under="payloads/") == [[image], {}]


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
    assert codec.resolve(decoded, found, under="payloads/") == [[numbers, 7], {"k": "v"}, None]
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
    assert codec.resolve(decoded, under="payloads/") == body


def test_payload_prefix_sets_where_payloads_go(codec: Codec, store: MemoryObjectStore) -> None:
    with payload_prefix("results/abc/"):
        codec.dumps(b"x" * 5000)
    assert [k.startswith("results/abc/") for k in store.objects] == [True]


def test_tampered_payload_is_refused(codec: Codec, store: MemoryObjectStore) -> None:
    decoded = codec.loads(codec.dumps(b"y" * 5000))
    store.objects[decoded.key] = b"z" * 5000
    with pytest.raises(PayloadError, match="does not match its digest"):
        codec.resolve(decoded, under="payloads/")


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
    assert codec.resolve(numbers, under="payloads/") is numbers


# -- hostile input: depth, long integers, confinement -----------------------------------


def _nested_text(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@pytest.mark.parametrize("depth", [1, 50, MAX_DEPTH])
def test_nesting_up_to_the_limit_is_read(codec: Codec, depth: int) -> None:
    assert json.dumps(codec.loads(_nested_text(depth))) == _nested_text(depth)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 500, 5000, 100_000])
def test_nesting_past_the_limit_is_refused_before_parsing(codec: Codec, depth: int) -> None:
    with pytest.raises(LimitExceeded, match=f"nested deeper than {MAX_DEPTH}"):
        codec.loads(_nested_text(depth))


def test_depth_counts_brackets_not_text_inside_strings() -> None:
    check_depth(json.dumps(["[" * 500, {"k": "{" * 500}, '\\"[[[\\"']))
    check_depth('{"a": [{"b": [' + '"x\\\\"' + "]}]}")  # an escaped backslash ends a string


def test_depth_is_measured_on_mixed_brackets() -> None:
    text = '{"a":' * 60 + "[" * 60 + "1" + "]" * 60 + "}" * 60
    with pytest.raises(LimitExceeded):
        check_depth(text)
    check_depth('{"a":' * 50 + "[" * 50 + "1" + "]" * 50 + "}" * 50)


def test_depth_of_an_open_string_is_found_in_linear_time() -> None:
    # Unterminated strings full of escaped quotes: a scan that started again at
    # every quote would take hours on this text (the suite's timeout fails it);
    # a linear one, milliseconds. No clock is read here.
    hostile = '["' + '\\"' * 200_000
    with pytest.raises(LimitExceeded):
        check_depth(hostile + "[" * 200)
    check_depth('"' + '\\"' * 200_000)


def test_writing_a_value_nested_past_the_limit_is_refused(codec: Codec) -> None:
    value: object = 1
    for _ in range(MAX_DEPTH + 5):
        value = [value]
    with pytest.raises(LimitExceeded):
        codec.dumps([[value], {}, None])
    for _ in range(5000):  # past Python's own recursion limit
        value = [value]
    with pytest.raises(LimitExceeded):
        codec.dumps([[value], {}, None])


def test_integers_past_the_conversion_limit_travel_in_hex(store: MemoryObjectStore) -> None:
    codec = Codec(ClaimCheck(lambda: store, inline_max_bytes=10**6, max_payload_bytes=10**6))
    big = 7**20_000  # about 16,900 digits
    text = codec.dumps([[[big, -big, 3]], {"k": big}, None])
    assert '"cloudworker.int"' in text
    assert codec.loads(text) == [[[big, -big, 3]], {"k": big}, None]


def test_a_long_decimal_literal_is_refused(codec: Codec) -> None:
    with pytest.raises(LimitExceeded, match="too long"):
        codec.loads("[" + "9" * 5000 + "]")


def test_a_malformed_long_integer_is_refused(codec: Codec) -> None:
    with pytest.raises(InvalidArguments, match="malformed long integer"):
        codec.loads('[{"__type__": "cloudworker.int", "__value__": "0x12 + 1"}]')


def test_loggable_long_integers_print_short() -> None:
    big = 7**20_000
    shown = loggable({"max": big, "n": [big, 1]})
    assert shown == {"max": big, "n": [big, 1]}
    assert repr(shown) == ("{'max': <integer of 56148 bits>, 'n': [<integer of 56148 bits>, 1]}")


def test_a_reference_outside_its_prefix_is_never_fetched(
    codec: Codec, store: MemoryObjectStore
) -> None:
    store.put("results/t1.json", b'{"secret": 1}')
    forged = PayloadRef(
        "results/t1.json", 13, hashlib.sha256(b'{"secret": 1}').hexdigest(), is_json=True
    )
    for under in ("payloads/t2/", "payloads/"):
        with pytest.raises(PayloadError, match="outside"):
            codec.resolve([forged], under=under)
    # Another task's payload: the right shape, the wrong task.
    with payload_prefix("payloads/t1/"):
        text = codec.dumps([[b"x" * 5000], {}])
    found: list[PayloadRef] = []
    with pytest.raises(PayloadError, match="outside payloads/t2/"):
        codec.resolve(codec.loads(text), found, under="payloads/t2/")
    assert found == []
    assert codec.resolve(codec.loads(text), found, under="payloads/t1/") == [[b"x" * 5000], {}]
    assert [ref.key.startswith("payloads/t1/") for ref in found] == [True]


def test_discard_deletes_nothing_outside_payloads(store: MemoryObjectStore) -> None:
    claims = ClaimCheck(lambda: store, inline_max_bytes=10, max_payload_bytes=100)
    store.put("results/t1.json", b"{}")
    store.put("payloads/t1/" + "a" * 32, b"x")
    outside = PayloadRef("results/t1.json", 2, "0" * 64)
    inside = PayloadRef("payloads/t1/" + "a" * 32, 1, "0" * 64)
    claims.discard([outside, inside])
    assert set(store.objects) == {"results/t1.json"}


@pytest.mark.parametrize(
    "value",
    [
        {"key": "k", "size": 1},
        {"key": 5, "size": 1, "sha256": "0" * 64},
        {"key": "k", "size": "1", "sha256": "0" * 64},
        {"key": "k", "size": -1, "sha256": "0" * 64},
        {"key": "k", "size": True, "sha256": "0" * 64},
        {"key": "k", "size": 1, "sha256": "zz"},
        ["k", 1, "0" * 64],
    ],
)
def test_malformed_references_are_refused(value: object) -> None:
    with pytest.raises(PayloadError, match="malformed payload reference"):
        PayloadRef.from_json(value)


def test_a_reference_sent_on_is_copied_under_the_new_task(
    codec: Codec, store: MemoryObjectStore
) -> None:
    """A chain's later step carries its arguments' references: re-sent, they move along."""
    with payload_prefix("payloads/t1/"):
        first = codec.loads(codec.dumps([[], {}, {"chain": [{"args": [b"y" * 5000]}]}]))
    (ref,) = first[2]["chain"][0]["args"]
    with payload_prefix("payloads/t2/"):
        second = codec.loads(codec.dumps([[ref, ref], {}, None]))
    moved, again = second[0]
    assert moved == again  # copied once per message
    assert moved.key.startswith("payloads/t2/")
    assert store.objects[moved.key] == store.objects[ref.key]
    assert codec.resolve(second, under="payloads/t2/") == [[b"y" * 5000] * 2, {}, None]
    # Outside a task's send (an inspect reply, say) a reference is only described.
    assert codec.loads(codec.dumps([ref])) == [ref]


def test_a_message_stored_whole_under_its_task_is_read_back(
    codec: Codec, store: MemoryObjectStore
) -> None:
    """send_task checks a task's payloads in under payloads/<task id>/, documents too."""
    body: list[Any] = [[f"argument {n:04}" for n in range(100)], {}, None]  # small parts
    with payload_prefix("payloads/t1/"):
        text = codec.dumps(body)
    assert '"cloudworker.document"' in text
    assert codec.loads(text) == body
    forged = text.replace("payloads/t1/", "results/t1/")
    with pytest.raises(PayloadError, match="outside payloads/"):
        codec.loads(forged)
