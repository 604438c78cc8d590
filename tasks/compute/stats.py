"""Exact summary statistics of a list of integers.

This module is deliberately pure: it imports nothing from Celery, boto3 or the
rest of cloudworker except :mod:`cloudworker.errors`, so the worker, the client and
the tests can all call :func:`compute_stats` directly and get the same answer.

Why the results are exact rather than "numpy floats":

* ``min``, ``max`` and ``median`` are values *of the input* (or the midpoint of
  two of them), so they are returned as Python ``int`` of any size. numpy
  scalars are never returned because they do not survive JSON encoding and
  silently wrap on arithmetic; floats are never returned because they lose
  digits above 2**53.
* An even-sized median whose two middle values have an odd sum is a
  half-integer; it is returned as a :class:`~decimal.Decimal` built digit by
  digit, because Decimal *arithmetic* rounds to the context precision (28
  digits) and would corrupt large medians.
* ``mean`` is a float by nature; it is the float nearest to the exact rational
  mean (exact integer sum divided by the count, correctly rounded).

Why there are two code paths: a Python-level loop over 10 million items costs
seconds, so the common case (every value fits in 64 bits) is validated with C
level builtins and computed with numpy in linear time, summing in 32-bit halves
so that the int64 accumulator can never overflow. Everything else (integers
beyond 64 bits, int subclasses, numpy ``uint64`` scalars in a list, object
arrays) takes a slower exact path on Python ints.
"""

from __future__ import annotations

import operator
import reprlib
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from cloudworker import InvalidNumbers, LimitExceeded

__all__ = ["check_integers", "compute_stats"]

#: Longest rendering of an offending value in an error message: enough to
#: recognise it, short enough that a huge bad item cannot flood a log line.
_MAX_SHOWN = 40

#: Rows summed per chunk. Each int64 value is split into a signed high half in
#: [-2**31, 2**31) and an unsigned low half in [0, 2**32); 2**30 of either sum to
#: less than 2**62 in magnitude, so an int64 (or uint64) accumulator is exact.
_SUM_CHUNK = 1 << 30

#: Element types a list may hold for the numpy fast path: ``numpy.fromiter``
#: converts these to int64 exactly or raises OverflowError. ``numpy.uint64`` is
#: left out because values above 2**63 must not wrap; int subclasses (IntEnum
#: and the like) are left out so their own ``__index__`` is honoured.
_FAST_TYPES: frozenset[type] = frozenset(
    {int}
    | {np.dtype(code).type for code in "bhilq"}
    | {np.dtype(code).type for code in "BHILQ" if np.dtype(code).itemsize < 8}
)

_REPR = reprlib.Repr()
_REPR.maxstring = _MAX_SHOWN
_REPR.maxother = _MAX_SHOWN
_REPR.maxlong = _MAX_SHOWN

_IntArray: TypeAlias = npt.NDArray[np.int64] | npt.NDArray[np.uint64]


def compute_stats(
    numbers: Sequence[int] | npt.NDArray[Any], *, max_count: int | None = None
) -> dict[str, int | float | Decimal]:
    """Return ``count``, ``mean``, ``median``, ``min`` and ``max`` of *numbers*.

    *numbers* is a list or tuple (any :class:`~collections.abc.Sequence`) of
    integers, Python or numpy, or a one-dimensional numpy array of an integer
    dtype. ``bool`` is rejected although it is an ``int`` subclass, because a
    ``True`` in a list of numbers is a bug in the caller, not the number 1.

    ``count``, ``min`` and ``max`` are Python ints; ``median`` is a Python int,
    or an exact :class:`~decimal.Decimal` half-integer when the two middle
    values of an even-sized input have an odd sum; ``mean`` is the float
    nearest to the exact mean.

    Raises :class:`~cloudworker.errors.LimitExceeded` if there are more than
    *max_count* numbers (checked before any other work, so an oversized request
    is refused cheaply) or if the mean is beyond the range of a float, and
    :class:`~cloudworker.errors.InvalidNumbers` if the input is empty or holds
    anything that is not an integer (the message names the first such item).
    """
    if isinstance(numbers, np.ndarray):
        if numbers.ndim != 1:
            raise InvalidNumbers(
                f"expected a one-dimensional array of integers, "
                f"got a {numbers.ndim}-dimensional array"
            )
        _check_count(numbers.shape[0], max_count)
        return _stats_of_array(numbers)
    # str, bytes and friends are Sequences too; bytes would even pass as a list
    # of small ints, which is never what a caller meant.
    if isinstance(numbers, (str, bytes, bytearray, memoryview)) or not isinstance(
        numbers, Sequence
    ):
        raise InvalidNumbers(f"expected a list of integers, got {type(numbers).__name__}")
    _check_count(len(numbers), max_count)
    return _stats_of_sequence(numbers)


def _check_count(count: int, max_count: int | None) -> None:
    """Refuse empty and oversized inputs before anything costs time."""
    if max_count is not None and count > max_count:
        raise LimitExceeded(f"too many integers: {count} given, the limit is {max_count}")
    if count == 0:
        raise InvalidNumbers("no integers given")


def _stats_of_array(array: npt.NDArray[Any]) -> dict[str, int | float | Decimal]:
    """Dispatch a non-empty 1-D array on its dtype.

    Integer arrays never need per-element validation, so they go straight to
    the fast path: uint64 stays uint64 (the fast path handles it natively and
    exactly), every other integer width is widened to int64. Object arrays may
    hold anything and are validated like a list; any other dtype (float, bool,
    str, datetime...) is wrong as a whole, so its first item is reported.
    """
    kind = array.dtype.kind
    if kind == "u" and array.dtype.itemsize == 8:
        return _stats_fast(array.astype(np.uint64, copy=False))
    if kind in "iu":
        return _stats_fast(array.astype(np.int64, copy=False))
    if kind == "O":
        return _stats_of_sequence(array.tolist())
    raise InvalidNumbers(
        f"item 0 is not an integer: {_show(array[0].item())} (the array's dtype is {array.dtype})"
    )


def _stats_of_sequence(numbers: Sequence[Any]) -> dict[str, int | float | Decimal]:
    """Validate a non-empty sequence's element types, then pick a path.

    ``set(map(type, ...))`` runs in C (about 0.15 s for 10 million items) and
    yields the few distinct element types, normally just ``{int}``. Checking
    those types validates every element at once: bools, floats, strings, None
    and nested lists are caught without a Python-level loop, which is needed
    because numpy itself would silently turn ``True`` into 1, ``2.7`` into 2 and
    ``'12'`` into 12. Only when a bad type is present do we loop, to name the
    first offending index.
    """
    types = _item_types(numbers)
    if types <= _FAST_TYPES:
        try:
            array = np.fromiter(numbers, dtype=np.int64, count=len(numbers))
        except (OverflowError, TypeError, ValueError):
            pass  # some value is beyond int64: compute exactly on Python ints below
        else:
            return _stats_fast(array)
    # Plain ints are used as they are; numpy scalars and int subclasses become ints.
    if types == {int}:
        return _stats_exact(list(numbers))
    return _stats_exact([operator.index(item) for item in numbers])


def check_integers(numbers: Any, *, max_count: int | None = None) -> None:
    """Raise what :func:`compute_stats` would for ``numbers``, without computing anything.

    For a list or tuple as it arrives in a message: the type, the count, then
    each item's type (in C, see :func:`_item_types`).
    """
    if not isinstance(numbers, (list, tuple)):
        raise InvalidNumbers(f"expected a list of integers, got {type(numbers).__name__}")
    _check_count(len(numbers), max_count)
    _item_types(numbers)


def _item_types(numbers: Sequence[Any]) -> set[type]:
    """The items' types, once each; :class:`InvalidNumbers` naming the first bad item."""
    types = set(map(type, numbers))
    bad_types = {t for t in types if not _is_integer_type(t)}
    if bad_types:
        for index, item in enumerate(numbers):
            if type(item) in bad_types:
                raise InvalidNumbers(f"item {index} is not an integer: {_show(item)}")
    return types


def _is_integer_type(kind: type) -> bool:
    """Tell whether items of this type are integers we accept (never bools)."""
    return issubclass(kind, (int, np.integer)) and not issubclass(kind, bool)


def _stats_fast(array: _IntArray) -> dict[str, int | float | Decimal]:
    """Compute the statistics of a non-empty int64 or uint64 array in linear time.

    ``numpy.partition`` is an introselect, O(n) on average, instead of an
    O(n log n) sort; for an even count both middle indices are requested in
    one call. The sum is exact: see :data:`_SUM_CHUNK`.
    """
    count = int(array.shape[0])
    middle = count // 2
    if count % 2:
        median: int | Decimal = int(np.partition(array, middle)[middle])
    else:
        parted = np.partition(array, (middle - 1, middle))
        median = _midpoint(int(parted[middle - 1]), int(parted[middle]))
    total = 0
    for start in range(0, count, _SUM_CHUNK):
        chunk = array[start : start + _SUM_CHUNK]
        high = int((chunk >> 32).sum())
        low = int((chunk & 0xFFFFFFFF).sum())
        total += (high << 32) + low
    return _result(count, total, int(array.min()), int(array.max()), median)


def _stats_exact(values: list[int]) -> dict[str, int | float | Decimal]:
    """Compute the statistics of non-empty Python ints of any size, exactly.

    Sorting is O(n log n) but this path only serves inputs beyond 64 bits,
    where correctness, not speed, is the point.
    """
    count = len(values)
    ordered = sorted(values)
    middle = count // 2
    if count % 2:
        median: int | Decimal = ordered[middle]
    else:
        median = _midpoint(ordered[middle - 1], ordered[middle])
    return _result(count, sum(ordered), ordered[0], ordered[-1], median)


def _midpoint(low: int, high: int) -> int | Decimal:
    """Return ``(low + high) / 2`` exactly: an int, or a Decimal ending in ``.5``.

    The Decimal is assembled from its digits, ``abs(low + high) * 5`` with
    exponent -1, because ``Decimal(low + high) / 2`` would round to the context
    precision (28 digits) and lose the tail of a large median. ``Decimal(int)``
    is exact at any size and, unlike ``str(int)``, is not subject to the
    4300-digit int/str conversion limit.
    """
    total = low + high
    if total % 2 == 0:
        return total // 2
    digits = Decimal(abs(total) * 5).as_tuple().digits
    return Decimal((1 if total < 0 else 0, digits, -1))


def _result(
    count: int, total: int, minimum: int, maximum: int, median: int | Decimal
) -> dict[str, int | float | Decimal]:
    """Assemble the result; the mean is ``total / count`` on Python ints.

    CPython's int true division is correctly rounded (it is the float nearest
    to ``Fraction(total, count)``), and raises OverflowError only when that
    nearest float does not exist.
    """
    try:
        mean = total / count
    except OverflowError:
        raise LimitExceeded(
            "the mean of these integers is beyond the range of a float (about 1.8e308)"
        ) from None
    return {"count": count, "mean": mean, "median": median, "min": minimum, "max": maximum}


def _show(value: object) -> str:
    """Render an offending value for an error message: short, never raising.

    ``reprlib`` bounds the work on a huge nested list or string before the text
    is cut to :data:`_MAX_SHOWN` characters; a broken ``__repr__`` must not
    replace the validation error with an unrelated one.
    """
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001  -- a user object's __repr__ may raise anything
        text = f"<{type(value).__name__} object>"
    if len(text) > _MAX_SHOWN:
        text = text[: _MAX_SHOWN - 3] + "..."
    return text
