"""Unit tests of client.numbers.parse_integers.

The fast path (``bytes.split`` + ``int``) and the slow path (one regular
expression) must agree with a plain token-by-token reference, and every error
must name the source, the line and the offending token.
"""

from __future__ import annotations

import random
import re
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.numbers import int_to_text, parse_integers
from cloudworker.errors import InvalidInput, InvalidNumbers


def reference(data: bytes) -> list[int] | None:
    """Parse token by token the obvious way; None when any token is invalid."""
    values = []
    for token in re.split(rb"[ \t\n\r\x0b\x0c]+", data):
        if not token:
            continue
        if re.fullmatch(rb"[+-]?[0-9]+", token) is None:
            return None
        sign = -1 if token.startswith(b"-") else 1
        value = 0
        for digit in token.lstrip(b"+-"):
            value = value * 10 + (digit - ord("0"))
        values.append(sign * value)
    return values


def error_of(data: bytes, source: str = "input") -> str:
    """Return the message of the InvalidNumbers that parsing *data* raises."""
    with pytest.raises(InvalidNumbers) as raised:
        parse_integers(data, source=source)
    message = str(raised.value)
    assert "\n" not in message
    return message


# --- valid input --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"1 2 3", [1, 2, 3]),
        (b"1\n2\n3\n", [1, 2, 3]),
        (b"1\r\n2\r\n3\r\n", [1, 2, 3]),
        (b"1\t2\t\t3", [1, 2, 3]),
        (b"\n\n  1\n\n\n2  \n\n", [1, 2]),
        (b"1\x0b2\x0c3\r4", [1, 2, 3, 4]),
        (b" \t\r\n 42 \t\r\n ", [42]),
        (b"7", [7]),
        (b"-5 +6 -0 +0 0", [-5, 6, 0, 0, 0]),
        (b"007 -007 +00 000", [7, -7, 0, 0]),
        (b"1 2\n3\t4\r\n5", [1, 2, 3, 4, 5]),
    ],
)
def test_valid_input(data: bytes, expected: list[int]) -> None:
    result = parse_integers(data)
    assert result == expected
    assert all(type(value) is int for value in result)


def test_huge_integers() -> None:
    data = b"%d\n-%d\n+%d\n" % (2**200, 2**70, 2**64)
    assert parse_integers(data) == [2**200, -(2**70), 2**64]


def test_integer_longer_than_the_int_str_digit_limit() -> None:
    limit = sys.get_int_max_str_digits() or 4300
    digits = "123456789" * (limit // 9 + 50)  # past the limit int() enforces
    expected = int(digits[:4000]) * 10 ** (len(digits) - 4000) + int(digits[4000:])
    result = parse_integers(f"5\n-{digits}\n+{digits}\n0{digits}".encode())
    assert result == [5, -expected, expected, expected]


def test_long_integer_and_an_underscore_token_still_reports_the_error() -> None:
    digits = b"9" * 5000
    assert error_of(digits + b"\n1_0\n") == "input line 2: '1_0' is not an integer"


def test_leading_utf8_byte_order_mark_is_ignored() -> None:
    assert parse_integers(b"\xef\xbb\xbf1\r\n2\r\n") == [1, 2]


def test_bytes_like_is_not_decoded_as_str() -> None:
    # int() on str would accept these non-ASCII digits; on bytes it must not.
    assert error_of("1\n\u0663\n".encode()) == "input line 2: '\u0663' is not an integer"
    assert error_of("\uff15".encode()) == "input line 1: '\uff15' is not an integer"


# --- invalid input ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"1\n2\n12abc\n", "f.txt line 3: '12abc' is not an integer"),
        (b"1.5", "f.txt line 1: '1.5' is not an integer"),
        (b"3\n1e3", "f.txt line 2: '1e3' is not an integer"),
        (b"--4", "f.txt line 1: '--4' is not an integer"),
        (b"+-4", "f.txt line 1: '+-4' is not an integer"),
        (b"-+4", "f.txt line 1: '-+4' is not an integer"),
        (b"1 4-", "f.txt line 1: '4-' is not an integer"),
        (b"0x10", "f.txt line 1: '0x10' is not an integer"),
        (b"1\n\n1_000\n", "f.txt line 3: '1_000' is not an integer"),
        (b"_1", "f.txt line 1: '_1' is not an integer"),
        (b"1_", "f.txt line 1: '1_' is not an integer"),
        (b"1 - 2", "f.txt line 1: '-' is not an integer"),
        (b"+", "f.txt line 1: '+' is not an integer"),
        (b"abc", "f.txt line 1: 'abc' is not an integer"),
        (b"1\r\n2\r\nx\r\n", "f.txt line 3: 'x' is not an integer"),
        (b"1,2", "f.txt line 1: '1,2' is not an integer"),
        (b"1\n2\n3\n4\n5\n6 7 8 nine 10", "f.txt line 6: 'nine' is not an integer"),
        (b"1\x01", "f.txt line 1: '1\\x01' is not an integer"),
        (b"1 0b1 0o7", "f.txt line 1: '0b1' is not an integer"),
        (b"Infinity", "f.txt line 1: 'Infinity' is not an integer"),
        ("1\u00a02".encode(), "f.txt line 1: '1\\xa02' is not an integer"),
    ],
)
def test_invalid_tokens(data: bytes, message: str) -> None:
    assert error_of(data, source="f.txt") == message


def test_first_bad_token_is_reported() -> None:
    data = b"1\n" * 1000 + b"bad1 1_0\nbad2\n"
    assert error_of(data, source="x") == "x line 1001: 'bad1' is not an integer"


def test_underscore_only_token_found_after_many_good_lines() -> None:
    data = b"12\n" * 5000 + b"3_4\n"
    assert error_of(data) == "input line 5001: '3_4' is not an integer"


def test_long_bad_token_is_truncated() -> None:
    message = error_of(b"1\n" + b"7" * 100 + b"x")
    assert message.startswith("input line 2: '7777")
    assert message.endswith("...' is not an integer")
    assert len(message) < 80


@pytest.mark.parametrize("data", [b"", b" ", b"\n\n\n", b" \t\r\n\x0b\x0c", b"\xef\xbb\xbf"])
def test_empty_or_whitespace_only(data: bytes) -> None:
    assert error_of(data, source="empty.txt") == "empty.txt contains no integers"


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b"1\n2\x003\n", 2),
        (b"\x00\x00\x00\x00", 1),
        (b"1\n2\n3\n\xff\xfe\x00garbage", 4),
    ],
)
def test_nul_bytes_are_binary(data: bytes, line: int) -> None:
    message = error_of(data, source="photo.jpg")
    assert message == f"photo.jpg is not a text file of integers (NUL byte on line {line})"


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b"\xff\xd8\xff\xe0 JFIF", 1),
        (b"1\n2\n\x80\n", 3),
        (b"1\n\xc3", 2),  # truncated two-byte sequence
    ],
)
def test_invalid_utf8_is_binary(data: bytes, line: int) -> None:
    message = error_of(data, source="photo.jpg")
    assert message == (
        f"photo.jpg is not a text file of integers (bytes that are not UTF-8 on line {line})"
    )
    assert "\\x" not in message  # the garbage itself is not echoed


def test_errors_are_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        parse_integers(b"x")


def test_default_source_name() -> None:
    assert error_of(b"") == "input contains no integers"


# --- property tests -------------------------------------------------------------------

_token_bytes = st.sampled_from(
    [b"0", b"1", b"9", b"+", b"-", b"_", b"a", b"."] + [bytes([c]) for c in b"\t\n\r\x0b\x0c "]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_token_bytes, max_size=40).map(b"".join))
def test_matches_reference_on_arbitrary_text(data: bytes) -> None:
    expected = reference(data)
    if expected is None:
        with pytest.raises(InvalidNumbers, match=r"^input line \d+: '.*' is not an integer$"):
            parse_integers(data)
    elif not expected:
        with pytest.raises(InvalidNumbers, match=r"^input contains no integers$"):
            parse_integers(data)
    else:
        assert parse_integers(data) == expected


_separators = st.sampled_from([b" ", b"\n", b"\r\n", b"\t", b"\n\n", b"  \t "])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=-(2**200), max_value=2**200), min_size=1, max_size=50),
    _separators,
)
def test_round_trips_formatted_integers(values: list[int], separator: bytes) -> None:
    data = separator.join(b"%d" % value for value in values) + separator
    assert parse_integers(data) == values


# --- int_to_text: the mirror of the long-integer parsing ------------------------------


#: Integers of up to 4300 digits (str()'s limit), every length equally likely.
_below_the_limit = st.integers(1, 4300).flatmap(lambda n: st.integers(1 - 10**n, 10**n - 1))


@settings(max_examples=300, deadline=None)
@given(_below_the_limit)
def test_int_to_text_matches_str_below_the_limit(value: int) -> None:
    assert int_to_text(value) == str(value)


@pytest.mark.parametrize("digits", [600, 601, 1200, 1201, 4300, 4301])
def test_int_to_text_at_chunk_and_limit_boundaries(digits: int) -> None:
    for value in (10 ** (digits - 1), 10**digits - 1, -(10 ** (digits - 1))):
        assert parse_integers(int_to_text(value).encode()) == [value]
    assert int_to_text(10**digits) == "1" + "0" * digits


def test_int_to_text_round_trips_far_beyond_the_limit() -> None:
    rng = random.Random(4300)
    value = rng.randrange(10**49_999, 10**50_000)
    values = [value, -value, 10**50_000, -(10**50_000) + 1, value * 10**7]
    texts = [int_to_text(v) for v in values]
    assert [len(text) for text in texts] == [50_000, 50_001, 50_001, 50_001, 50_007]
    assert texts[4].endswith("0" * 7) and not texts[0].startswith("0")
    assert parse_integers(" ".join(texts).encode()) == values


def test_int_to_text_of_100_000_digits_leaves_the_limit_alone() -> None:
    limit = sys.get_int_max_str_digits()
    value = random.Random(7).randrange(10**99_999, 10**100_000)
    text = int_to_text(value)
    assert len(text) == 100_000
    assert parse_integers(text.encode()) == [value]
    assert sys.get_int_max_str_digits() == limit
