"""Parse a text file of integers, fast, strictly, and with useful errors.

The client reads user files of up to tens of millions of integers, so parsing
must cost seconds, not minutes: a Python loop per token is too slow. The fast
path is therefore ``bytes.split()`` plus ``map(int, ...)``, both in C.

``int()`` is more lenient than the format we accept, so it cannot be the only
check. On *bytes* it accepts, beyond ``[+-]?[0-9]+``, only surrounding ASCII
whitespace (which ``bytes.split()`` has already removed) and underscores
between digits (``1_000``). Non-ASCII digits such as ``٣`` are rejected on
bytes (they are accepted on ``str``, which is why we never decode first). So a
single C-level ``b"_" in data`` scan makes the fast path exactly as strict as
the format. Anything ``int()`` or that scan refuses drops to a slower path that
finds the first bad token, with its line number, using one regular expression.

The slow path also covers valid integers longer than CPython's int/str
conversion limit (4300 digits by default), which ``int()`` refuses; those are
converted by splitting the digit string, so integers of any size are accepted.
:func:`int_to_text` is the mirror image, for printing integers of any size.
"""

from __future__ import annotations

import re

from cloudworker.errors import InvalidNumbers

__all__ = ["int_to_text", "parse_integers"]

#: Longest rendering of a bad token in an error message.
_MAX_SHOWN = 40

#: A Windows editor may start a UTF-8 file with a byte order mark; it is
#: invisible to the user, so it is skipped rather than reported as a bad token.
_BOM = b"\xef\xbb\xbf"

#: The first token (maximal run of non-whitespace, starting at the beginning of
#: the data or after whitespace) that is not an optionally signed run of ASCII
#: digits. In a bytes pattern ``\s`` is exactly ``[ \t\n\r\f\v]``, the set that
#: ``bytes.split()`` splits on, so both see the same tokens.
_FIRST_BAD_TOKEN = re.compile(rb"(?<!\S)(?![+-]?[0-9]+(?!\S))\S+")

#: Digits converted by one ``int()`` call when parsing a very long integer. The
#: int/str conversion limit is process-wide and may be changed at run time; this
#: stays below the smallest value ``sys.set_int_max_str_digits`` accepts (640),
#: so it works whatever the limit is, and this module never changes the limit.
_CHUNK_DIGITS = 600

#: The smallest integer with more than ``_CHUNK_DIGITS`` digits.
_CHUNK_SCALE = 10**_CHUNK_DIGITS


def parse_integers(data: bytes, *, source: str = "input") -> list[int]:
    """Return the integers in *data*, a text of whitespace-separated integers.

    Integers are separated by any ASCII whitespace (spaces, tabs, newlines,
    CRLF, blank lines); each may carry one ``+`` or ``-`` sign and leading
    zeros, and may be of any size. Anything else (``1.5``, ``1e3``, ``0x10``,
    ``1_000``, ``--4``, ``12abc``, non-ASCII digits) is an error.

    Raises :class:`~cloudworker.errors.InvalidNumbers` with a one-line message that
    starts with *source* (e.g. a file name): it names the line and the first bad
    token, says that *source* contains no integers, or, for binary data (NUL
    bytes or invalid UTF-8), says that it is not a text file of integers
    without echoing the garbage.
    """
    data = data.removeprefix(_BOM)
    _check_text(data, source)
    tokens = data.split()
    if not tokens:
        raise InvalidNumbers(f"{source} contains no integers")
    if b"_" not in data:
        try:
            return list(map(int, tokens))
        except ValueError:
            pass  # a bad token, or a valid one beyond the int/str digit limit
    bad = _FIRST_BAD_TOKEN.search(data)
    if bad is not None:
        raise InvalidNumbers(
            f"{source} line {_line_of(data, bad.start())}: {_show(bad.group())} is not an integer"
        )
    return [_to_int(token) for token in tokens]


def _check_text(data: bytes, source: str) -> None:
    """Refuse binary data before tokenising it.

    A NUL byte or invalid UTF-8 means the user picked the wrong file; naming a
    "token" of binary garbage would be useless and could mangle a terminal.
    Valid non-ASCII UTF-8 passes here and is reported as a bad token instead.
    """
    nul = data.find(b"\0")
    if nul >= 0:
        raise InvalidNumbers(
            f"{source} is not a text file of integers (NUL byte on line {_line_of(data, nul)})"
        )
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidNumbers(
                f"{source} is not a text file of integers "
                f"(bytes that are not UTF-8 on line {_line_of(data, error.start)})"
            ) from None


def _line_of(data: bytes, offset: int) -> int:
    """Return the 1-based line number of *offset*; CRLF counts as one break."""
    return data.count(b"\n", 0, offset) + 1


def _show(token: bytes) -> str:
    """Render a bad token as a short, printable ``repr`` of its text."""
    text = token.decode("utf-8", errors="replace")
    if len(text) > _MAX_SHOWN:
        text = text[: _MAX_SHOWN - 3] + "..."
    return repr(text)


def _to_int(token: bytes) -> int:
    """Convert a token already known to match ``[+-]?[0-9]+``, of any length."""
    if len(token) <= _CHUNK_DIGITS:
        return int(token)
    negative = token.startswith(b"-")
    value = _digits_to_int(token.lstrip(b"+-"))
    return -value if negative else value


def _digits_to_int(digits: bytes) -> int:
    """Convert a long run of ASCII digits by halves, under the int/str limit.

    Splitting in halves keeps the multiplications balanced, so the cost is
    that of CPython's Karatsuba multiplication rather than quadratic.
    """
    if len(digits) <= _CHUNK_DIGITS:
        return int(digits)
    low_length = len(digits) // 2
    scale: int = 10**low_length  # typeshed types int ** int as Any (it may be a float)
    high = _digits_to_int(digits[:-low_length])
    return high * scale + _digits_to_int(digits[-low_length:])


def int_to_text(value: int) -> str:
    """Return the decimal text of *value*, of any size, like ``str(value)``.

    ``str()`` refuses integers longer than the int/str conversion limit, yet a
    median or maximum of such integers is a valid answer that must be printed.
    This never changes the process-wide limit (other threads rely on it): like
    :func:`_digits_to_int`, it splits the number in halves, here by ``divmod``
    with powers of ten of ``_CHUNK_DIGITS * 2**k`` digits, so that ``str()``
    only sees parts of at most ``_CHUNK_DIGITS`` digits and the balanced
    divisions cost far less than peeling one chunk at a time (quadratic).
    """
    if -_CHUNK_SCALE < value < _CHUNK_SCALE:
        return str(value)
    if value < 0:
        return "-" + int_to_text(-value)
    # An upper bound on the digit count: 0.30103 > log10(2).
    digits = value.bit_length() * 30103 // 100000 + 1
    level = 0
    while _CHUNK_DIGITS << level < digits:
        level += 1
    powers = [_CHUNK_SCALE]  # powers[k] == 10 ** (_CHUNK_DIGITS << k)
    while len(powers) < level:
        powers.append(powers[-1] * powers[-1])
    return _padded_digits(value, level, powers).lstrip("0")


def _padded_digits(value: int, level: int, powers: list[int]) -> str:
    """Return ``0 <= value < 10**(_CHUNK_DIGITS << level)`` as that many digits.

    Leading zeros are kept: they belong to the low half of a larger number.
    """
    if level == 0:
        return str(value).zfill(_CHUNK_DIGITS)
    high, low = divmod(value, powers[level - 1])
    return _padded_digits(high, level - 1, powers) + _padded_digits(low, level - 1, powers)
