"""Unit tests of tasks.compute.stats.compute_stats.

Every expected value is computed independently (by hand, or with ``sorted`` and
``Fraction`` on Python ints), so that the numpy fast path, the exact path and
the Decimal midpoint are each checked against exact arithmetic.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Sequence
from decimal import Context, Decimal, Inexact
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudworker.errors import InvalidInput, InvalidNumbers, LimitExceeded
from tasks.compute.stats import compute_stats

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
KEYS = {"count", "mean", "median", "min", "max"}


def reference(numbers: Sequence[int]) -> dict[str, int | float | Decimal]:
    """Return the statistics the simple, obviously exact way: sorted + Fraction."""
    ordered = sorted(int(n) for n in numbers)
    count = len(ordered)
    middle = count // 2
    if count % 2:
        median: int | Decimal = ordered[middle]
    elif (ordered[middle - 1] + ordered[middle]) % 2 == 0:
        median = (ordered[middle - 1] + ordered[middle]) // 2
    else:
        median = exact_half(ordered[middle - 1] + ordered[middle])
    return {
        "count": count,
        "mean": float(Fraction(sum(ordered), count)),
        "median": median,
        "min": ordered[0],
        "max": ordered[-1],
    }


def exact_half(numerator: int) -> Decimal:
    """Return numerator / 2 by Decimal division in a context too wide to round.

    This is deliberately a different construction from the module's digit
    tuple, so that the two check each other.
    """
    value = Decimal(numerator)
    context = Context(prec=len(value.as_tuple().digits) + 2, traps=[Inexact])
    return context.divide(value, Decimal(2))


def as_input(items: list[Any]) -> list[int]:
    """Pass deliberately ill-typed items to compute_stats without a type error."""
    return items


def assert_exact_types(result: dict[str, int | float | Decimal]) -> None:
    """Check the result holds Python ints/floats/Decimals, never numpy scalars."""
    assert set(result) == KEYS
    assert type(result["count"]) is int
    assert type(result["min"]) is int
    assert type(result["max"]) is int
    assert type(result["mean"]) is float
    assert type(result["median"]) in (int, Decimal)


# --- small known cases ---------------------------------------------------------


@pytest.mark.parametrize(
    ("numbers", "expected"),
    [
        ([5], {"count": 1, "mean": 5.0, "median": 5, "min": 5, "max": 5}),
        ([3, 1, 2], {"count": 3, "mean": 2.0, "median": 2, "min": 1, "max": 3}),
        ([4, 1, 3, 2], {"count": 4, "mean": 2.5, "median": Decimal("2.5"), "min": 1, "max": 4}),
        ([1, 3, 5, 7], {"count": 4, "mean": 4.0, "median": 4, "min": 1, "max": 7}),
        ([-5, -1, -3], {"count": 3, "mean": -3.0, "median": -3, "min": -5, "max": -1}),
        ([-1, -2], {"count": 2, "mean": -1.5, "median": Decimal("-1.5"), "min": -2, "max": -1}),
        ([0, -1], {"count": 2, "mean": -0.5, "median": Decimal("-0.5"), "min": -1, "max": 0}),
        ([7, 7, 7, 7], {"count": 4, "mean": 7.0, "median": 7, "min": 7, "max": 7}),
        ([0], {"count": 1, "mean": 0.0, "median": 0, "min": 0, "max": 0}),
        ((10, -10, 3), {"count": 3, "mean": 1.0, "median": 3, "min": -10, "max": 10}),
    ],
)
def test_small_known_cases(numbers: Sequence[int], expected: dict[str, object]) -> None:
    result = compute_stats(numbers)
    assert result == expected
    assert_exact_types(result)


def test_same_answer_from_list_tuple_and_array() -> None:
    numbers = [9, -4, 17, 0, 3, 3]
    expected = {"count": 6, "mean": 28 / 6, "median": 3, "min": -4, "max": 17}
    assert compute_stats(numbers) == expected
    assert compute_stats(tuple(numbers)) == expected
    assert compute_stats(np.array(numbers, dtype=np.int64)) == expected
    assert compute_stats(range(-3, 3)) == {
        "count": 6,
        "mean": -0.5,
        "median": Decimal("-0.5"),
        "min": -3,
        "max": 2,
    }


def test_median_is_int_when_middle_sum_is_even() -> None:
    result = compute_stats([1, 2, 4, 100])
    assert result["median"] == 3
    assert type(result["median"]) is int
    result = compute_stats([-7, -3])
    assert result["median"] == -5
    assert type(result["median"]) is int


def test_half_integer_median_is_exact_decimal() -> None:
    result = compute_stats([2, 3])
    assert result["median"] == Decimal("2.5")
    assert type(result["median"]) is Decimal
    assert str(result["median"]) == "2.5"


# --- integers beyond 64 bits -----------------------------------------------------


def test_huge_half_integer_median_keeps_every_digit() -> None:
    low, high = 2**200, 2**200 + 1
    median = compute_stats([high, low])["median"]
    assert isinstance(median, Decimal)
    assert str(median) == str(2**200) + ".5"
    # Compare as exact rationals: 28-digit rounding would break this equality.
    assert Fraction(median) == Fraction(low + high, 2)


def test_huge_negative_half_integer_median() -> None:
    low, high = -(2**200) - 1, -(2**200)
    median = compute_stats([low, high])["median"]
    assert isinstance(median, Decimal)
    assert Fraction(median) == Fraction(low + high, 2)
    assert str(median) == "-" + str(2**200) + ".5"


def test_median_beyond_int_str_digit_limit() -> None:
    """Decimal(int) is exact past the 4300-digit int/str limit; str(int) is not usable."""
    low = 2**20000  # 6021 digits
    top = 2**20001
    # The two outer values cancel the middle ones, so the mean (0) is a float.
    result = compute_stats([low, low + 1, -(2 * low + 1) - top, top])
    assert result["mean"] == 0.0
    median = result["median"]
    assert isinstance(median, Decimal)
    assert Fraction(median) == Fraction(2 * low + 1, 2)
    assert len(median.as_tuple().digits) == 6022


@pytest.mark.parametrize(
    "numbers",
    [
        [2**70, 2**70 + 3, 2**70 - 5],
        [-(2**70), 1, 2, 3],
        [2**200, -(2**200), 17, -3, 5],
        [INT64_MAX, INT64_MAX + 1],
        [INT64_MIN - 1, INT64_MIN, 0],
        [2**64, 1, 2, 3, 4, 5, 6, 7],
    ],
)
def test_integers_beyond_int64(numbers: list[int]) -> None:
    result = compute_stats(numbers)
    assert result == reference(numbers)
    assert_exact_types(result)
    assert result["min"] == min(numbers)
    assert result["max"] == max(numbers)


def test_small_and_huge_mixed_in_a_large_list() -> None:
    numbers = [*range(-500, 500), 2**90, -(2**90) - 1]
    result = compute_stats(numbers)
    assert result == reference(numbers)
    assert result["median"] == Decimal("-0.5")
    assert result["max"] == 2**90


def test_int64_extremes_sum_does_not_overflow() -> None:
    numbers = [INT64_MAX] * 10_001 + [INT64_MAX - 1] * 999
    result = compute_stats(numbers)
    exact_total = sum(numbers)
    assert exact_total > INT64_MAX  # the sum would wrap in a plain int64 accumulator
    assert result["mean"] == float(Fraction(exact_total, len(numbers)))
    assert result["median"] == INT64_MAX
    assert result["min"] == INT64_MAX - 1

    negative = [INT64_MIN] * 5000 + [INT64_MIN + 1] * 4999
    result = compute_stats(np.array(negative, dtype=np.int64))
    assert result["mean"] == float(Fraction(sum(negative), len(negative)))
    assert result["median"] == INT64_MIN
    assert result["min"] == INT64_MIN
    assert result["max"] == INT64_MIN + 1


def test_int64_extremes_median_of_both_ends() -> None:
    result = compute_stats([INT64_MIN, INT64_MAX])
    assert result["median"] == Decimal("-0.5")
    assert result["mean"] == -0.5
    result = compute_stats([INT64_MAX, INT64_MAX - 2])
    assert result["median"] == INT64_MAX - 1  # int64 (a+b)/2 would overflow


def test_uint64_array_above_2_63_stays_exact() -> None:
    values = [2**64 - 1, 2**64 - 2, 2**63, 2**63 + 1]
    result = compute_stats(np.array(values, dtype=np.uint64))
    assert result == reference(values)
    assert result["max"] == 2**64 - 1
    assert result["min"] == 2**63
    assert Fraction(result["median"]) == Fraction(2**64 - 2 + 2**63 + 1, 2)
    assert_exact_types(result)


def test_uint64_array_many_large_values_sum_exactly() -> None:
    values = np.full(3001, 2**64 - 1, dtype=np.uint64)
    values[0] = 0
    result = compute_stats(values)
    exact_total = (2**64 - 1) * 3000
    assert result["mean"] == float(Fraction(exact_total, 3001))
    assert result["median"] == 2**64 - 1


@pytest.mark.parametrize(
    "dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
)
def test_every_integer_dtype(dtype: type[np.integer[Any]]) -> None:
    info = np.iinfo(dtype)
    values = [int(info.min), int(info.max), 0, 1, int(info.max) - 1]
    result = compute_stats(np.array(values, dtype=dtype))
    assert result == reference(values)
    assert_exact_types(result)


def test_big_endian_array() -> None:
    values = [3, -(2**62), 2**62, 5]
    result = compute_stats(np.array(values, dtype=">i8"))
    assert result == reference(values)


def test_numpy_scalars_in_a_list() -> None:
    values: list[Any] = [np.int64(INT64_MAX), np.int8(-3), np.uint32(2**32 - 1), 4]
    result = compute_stats(values)
    assert result == reference([int(v) for v in values])
    assert_exact_types(result)


def test_numpy_uint64_scalars_above_2_63_in_a_list() -> None:
    values: list[Any] = [np.uint64(2**64 - 1), np.uint64(2**63), 1]
    result = compute_stats(values)
    assert result["max"] == 2**64 - 1
    assert result["median"] == 2**63
    assert_exact_types(result)


def test_int_subclass_is_accepted_as_its_value() -> None:
    class Size(enum.IntEnum):
        SMALL = 1
        LARGE = 10

    result = compute_stats([Size.SMALL, Size.LARGE, 4])
    assert result == {"count": 3, "mean": 5.0, "median": 4, "min": 1, "max": 10}
    assert_exact_types(result)


def test_object_array_of_huge_ints() -> None:
    values = [2**100, 3, -(2**99)]
    array = np.array(values, dtype=object)
    assert compute_stats(array) == reference(values)


# --- mean --------------------------------------------------------------------------


def test_mean_is_correctly_rounded() -> None:
    # The exact mean lies between two floats; naive float summation gets it wrong.
    values = [2**53, 1, 1, 1]
    naive = sum(float(v) for v in values) / len(values)
    exact = float(Fraction(sum(values), len(values)))
    assert naive != exact
    assert compute_stats(values)["mean"] == exact
    assert compute_stats(np.array(values, dtype=np.int64))["mean"] == exact


def test_mean_of_huge_ints_is_correctly_rounded() -> None:
    values = [3**150, 3**150 + 1, -(2**100), 7]
    assert compute_stats(values)["mean"] == float(Fraction(sum(values), 4))


def test_mean_beyond_float_range_is_limit_exceeded() -> None:
    with pytest.raises(LimitExceeded, match="beyond the range of a float"):
        compute_stats([10**400, 10**400])


def test_huge_values_with_a_small_mean_are_fine() -> None:
    result = compute_stats([10**400, -(10**400), 6])
    assert result["mean"] == 2.0
    assert result["median"] == 6


def test_mean_just_inside_float_range() -> None:
    biggest = int(sys.float_info.max)
    result = compute_stats([biggest, biggest])
    assert result["mean"] == sys.float_info.max


# --- invalid inputs ---------------------------------------------------------------


@pytest.mark.parametrize("empty", [[], (), np.array([], dtype=np.int64)])
def test_empty_input(empty: Any) -> None:
    with pytest.raises(InvalidNumbers, match=r"^no integers given$"):
        compute_stats(empty)


@pytest.mark.parametrize(
    ("numbers", "message"),
    [
        ([1, 2, 3, "12"], "item 3 is not an integer: '12'"),
        ([True, 2], "item 0 is not an integer: True"),
        ([1, False], "item 1 is not an integer: False"),
        ([1, 2.0], "item 1 is not an integer: 2.0"),
        ([1.5], "item 0 is not an integer: 1.5"),
        ([1, None, "x"], "item 1 is not an integer: None"),
        ([1, [2, 3]], "item 1 is not an integer: [2, 3]"),
        ([[1], [2]], "item 0 is not an integer: [1]"),
        ([1, 2, np.True_], "item 2 is not an integer: np.True_"),
        ([1, np.float64(2.0)], "item 1 is not an integer: np.float64(2.0)"),
        ([1, 1 + 0j], "item 1 is not an integer: (1+0j)"),
        ([1, Decimal(2)], "item 1 is not an integer: Decimal('2')"),
        ([1, 2**80, 3.0], "item 2 is not an integer: 3.0"),
    ],
)
def test_non_integer_items(numbers: list[Any], message: str) -> None:
    with pytest.raises(InvalidNumbers) as raised:
        compute_stats(numbers)
    assert str(raised.value) == message


def test_invalid_numbers_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        compute_stats(as_input([None]))


def test_long_offending_value_is_truncated() -> None:
    with pytest.raises(InvalidNumbers) as raised:
        compute_stats(as_input([1, "9" * 1000]))
    message = str(raised.value)
    assert message.startswith("item 1 is not an integer: '999")
    assert len(message) < 80


def test_huge_nested_list_is_reported_briefly() -> None:
    with pytest.raises(InvalidNumbers) as raised:
        compute_stats(as_input([0, list(range(1_000_000))]))
    assert str(raised.value).startswith("item 1 is not an integer: [0, 1, 2")
    assert len(str(raised.value)) < 80


def test_broken_repr_does_not_hide_the_error() -> None:
    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    with pytest.raises(InvalidNumbers, match=r"^item 1 is not an integer: <Broken [^>]*>$"):
        compute_stats(as_input([1, Broken()]))


def test_first_bad_index_is_reported_in_a_long_list() -> None:
    numbers: list[Any] = list(range(100_000))
    numbers[70_000] = True
    numbers[90_000] = "x"
    with pytest.raises(InvalidNumbers, match=r"^item 70000 is not an integer: True$"):
        compute_stats(numbers)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([1.0, 2.0]), "item 0 is not an integer: 1.0 (the array's dtype is float64)"),
        (np.array([True, False]), "item 0 is not an integer: True (the array's dtype is bool)"),
        (np.array(["1", "2"]), "item 0 is not an integer: '1' (the array's dtype is <U1)"),
        (np.array([1, "x"], dtype=object), "item 1 is not an integer: 'x'"),
    ],
)
def test_arrays_of_other_dtypes(array: npt.NDArray[Any], message: str) -> None:
    with pytest.raises(InvalidNumbers) as raised:
        compute_stats(array)
    assert str(raised.value) == message


@pytest.mark.parametrize(("array", "dims"), [(np.array([[1, 2], [3, 4]]), 2), (np.array(5), 0)])
def test_arrays_of_wrong_shape(array: npt.NDArray[Any], dims: int) -> None:
    with pytest.raises(InvalidNumbers, match=f"got a {dims}-dimensional array"):
        compute_stats(array)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("123", "str"),
        (b"\x01\x02", "bytes"),
        (bytearray(b"\x01"), "bytearray"),
        ({1, 2}, "set"),
        ({1: 2}, "dict"),
        (5, "int"),
        (None, "NoneType"),
        (iter([1, 2]), "list_iterator"),
    ],
)
def test_not_a_sequence(value: Any, kind: str) -> None:
    with pytest.raises(InvalidNumbers, match=f"^expected a list of integers, got {kind}$"):
        compute_stats(value)


# --- max_count -----------------------------------------------------------------------


def test_max_count_allows_up_to_the_limit() -> None:
    assert compute_stats([1, 2, 3], max_count=3)["count"] == 3


def test_max_count_exceeded() -> None:
    with pytest.raises(LimitExceeded) as raised:
        compute_stats([1, 2, 3, 4], max_count=3)
    assert "4" in str(raised.value)
    assert "3" in str(raised.value)
    assert str(raised.value) == "too many integers: 4 given, the limit is 3"


def test_max_count_is_checked_before_validation() -> None:
    # The bad item would be an InvalidNumbers; the limit must win, unexamined.
    with pytest.raises(LimitExceeded):
        compute_stats(as_input([1, 2, "x"]), max_count=2)
    with pytest.raises(LimitExceeded):
        compute_stats(np.zeros(10, dtype=np.float64), max_count=5)


def test_max_count_on_an_array() -> None:
    with pytest.raises(LimitExceeded, match="10 given, the limit is 9"):
        compute_stats(np.arange(10), max_count=9)


def test_max_count_is_checked_without_reading_items() -> None:
    class Huge(Sequence[int]):
        """Pretends to be enormous; reading any item is a test failure."""

        def __len__(self) -> int:
            return 10**12

        def __getitem__(self, index: Any) -> Any:
            raise AssertionError("items must not be read when over the limit")

    with pytest.raises(LimitExceeded, match="1000000000000 given"):
        compute_stats(Huge(), max_count=1000)


# --- property test ---------------------------------------------------------------------

_integers = st.one_of(
    st.integers(min_value=-1000, max_value=1000),
    st.integers(min_value=INT64_MIN, max_value=INT64_MAX),
    st.integers(min_value=-(2**130), max_value=2**130),
    st.sampled_from([INT64_MIN, INT64_MAX, INT64_MAX + 1, INT64_MIN - 1, 2**64, 0, -1]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_integers, min_size=1, max_size=60))
def test_matches_exact_reference(numbers: list[int]) -> None:
    result = compute_stats(numbers)
    assert result == reference(numbers)
    assert_exact_types(result)
    assert Fraction(result["median"]) == reference_median(numbers)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=INT64_MIN, max_value=INT64_MAX), min_size=1, max_size=60))
def test_array_matches_list(numbers: list[int]) -> None:
    from_array = compute_stats(np.array(numbers, dtype=np.int64))
    assert from_array == compute_stats(numbers)
    assert from_array == reference(numbers)
    assert_exact_types(from_array)


def reference_median(numbers: list[int]) -> Fraction:
    ordered = sorted(numbers)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return Fraction(ordered[middle])
    return Fraction(ordered[middle - 1] + ordered[middle], 2)
