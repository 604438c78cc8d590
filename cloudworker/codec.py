"""JSON on the wire, with large payloads checked into S3 (claim-check).

An SQS message holds at most 1 MiB (256 KiB on older queues), so anything larger
travels through S3 and the message carries a small reference. It happens here,
once, in the serializer every message and result goes through (kombu's ``json``
is re-registered with this codec), so neither task functions nor callers know:

* ``bytes`` larger than the inline limit are stored raw and encoded as a
  ``{"__type__": "cloudworker.payload", ...}`` reference.
* When a message is still too large, its large parts (each task argument and
  keyword value, i.e. anything at depth two such as Celery's
  ``[args, kwargs, embed]``) are stored as JSON and encoded as
  ``cloudworker.json`` references.
* Only a message whose size is not in such parts is stored whole
  (``cloudworker.document``); it is resolved as soon as it is decoded.

References decode to lazy :class:`PayloadRef` objects, and the receiving side
calls :meth:`Codec.resolve` where blocking is cheap: the worker's pool process
just before the task runs (never its consumer loop, which decodes every task
body), and the waiting client. Every payload carries its SHA-256; a payload
that is missing, expired or altered raises :class:`~cloudworker.errors.PayloadError`.
Small ``bytes`` are inline base64 in kombu's own ``{"__type__": "base64"}`` form.

What a hostile message could do to a decoder is bounded here, for every JSON text
either way (task bodies, payloads, results):

* **Nesting** deeper than :data:`MAX_DEPTH` is refused with
  :class:`~cloudworker.errors.LimitExceeded`, measured on the text before it is parsed
  (in C-speed passes, linear in the text for any input). Deeper values would
  reach Python's recursion limit in the JSON decoder, in pickle (Celery's
  prefork pool pickles every request) or in Celery's own canvas code.
* **Integers** beyond CPython's int/str conversion limit (4300 digits) travel as
  ``{"__type__": "cloudworker.int"}`` markers in hexadecimal, which converts in
  linear time; a decimal literal that long is refused, as Python refuses it,
  because converting it costs quadratic time.
* **References** are confined: :meth:`Codec.resolve` fetches only objects checked
  in directly under the prefix its caller names (a task's own
  ``payloads/<task id>/``, a result's own ``results/<task id>/``), so a forged
  reference cannot read, or have deleted, anything else in the bucket.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from kombu import serialization
from kombu.utils import json as kombu_json

from cloudworker import keys
from cloudworker.errors import CloudworkerError, InvalidArguments, LimitExceeded, PayloadError
from cloudworker.objectstore import ObjectStore

__all__ = [
    "MAX_DEPTH",
    "ClaimCheck",
    "Codec",
    "PayloadRef",
    "check_depth",
    "install",
    "loggable",
    "payload_prefix",
]

PAYLOAD_TYPE = "cloudworker.payload"
JSON_TYPE = "cloudworker.json"
DOCUMENT_TYPE = "cloudworker.document"
INT_TYPE = "cloudworker.int"
#: Deepest nesting of arrays and objects any JSON text may have. Celery's canvas
#: (chains of chords of groups) stays far below; Python's recursion limit (1000,
#: shared by the JSON decoder, pickle and Celery's canvas code) far above.
MAX_DEPTH = 100
#: Integers with more bits than this travel in hexadecimal (the int/str
#: conversion limit, 4300 decimal digits, is about 14,284 bits).
_LONG_INT_BITS = 14_000
_BASE64_GROWTH = 4 / 3
#: A part of an oversized message is checked in when its JSON is over this share of the limit.
_PART_SHARE = 4

_prefix: ContextVar[str] = ContextVar("cloudworker_payload_prefix", default=keys.PAYLOADS)

#: A JSON string; one left open runs to the end of the text, so that no input makes
#: the scan start again inside it (which would cost quadratic time).
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_ONE_KIND = str.maketrans("{}", "[]")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HEX_INT = re.compile(r"-?0x[0-9a-f]+")


def check_depth(text: str, limit: int = MAX_DEPTH) -> None:
    """Raise :class:`LimitExceeded` if JSON ``text`` nests deeper than ``limit``.

    Works on the text, before any parser recurses into it: strings are cut out,
    then everything but brackets, then innermost pairs one layer per pass.
    """
    if text.count("[") + text.count("{") <= limit:
        return
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)).translate(_ONE_KIND)
    for _ in range(limit):
        brackets = brackets.replace("[]", "")
        if not brackets:
            return
    if "[" in brackets:  # deeper, or opened and never closed: either way, refused
        raise LimitExceeded(f"JSON nested deeper than {limit} levels")


@contextlib.contextmanager
def payload_prefix(prefix: str) -> Iterator[None]:
    """Store the payloads encoded inside this block under ``prefix``."""
    token = _prefix.set(prefix)
    try:
        yield
    finally:
        _prefix.reset(token)


@dataclass(frozen=True)
class PayloadRef:
    """A claim ticket: where a payload is stored, its size, its digest, what it holds."""

    key: str
    size: int
    sha256: str
    #: True when the payload is JSON to decode, False when it is raw bytes.
    is_json: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_json(cls, value: Any, *, is_json: bool = False) -> PayloadRef:
        try:
            key, size, sha256 = value["key"], value["size"], value["sha256"]
        except (TypeError, KeyError):
            key = size = sha256 = None
        if (
            not isinstance(key, str)
            or type(size) is not int
            or size < 0
            or not isinstance(sha256, str)
            or not _SHA256.fullmatch(sha256)
        ):
            raise PayloadError(f"malformed payload reference: {value!r:.80}")
        return cls(key, size, sha256, is_json)

    def marker(self) -> dict[str, Any]:
        """The JSON that stands for the payload in a message."""
        return {
            "__type__": JSON_TYPE if self.is_json else PAYLOAD_TYPE,
            "__value__": self.to_json(),
        }


class ClaimCheck:
    """Checks payloads into an :class:`ObjectStore` and out again, verified."""

    def __init__(
        self,
        store: Callable[[], ObjectStore],
        *,
        inline_max_bytes: int,
        max_payload_bytes: int,
    ) -> None:
        self._store = store
        self.inline_max_bytes = inline_max_bytes
        self.max_payload_bytes = max_payload_bytes

    def check_in(self, data: bytes, *, is_json: bool = False) -> PayloadRef:
        """Store ``data`` and return its ticket."""
        self._check_size(len(data))
        ref = PayloadRef(
            key=f"{_prefix.get()}{uuid.uuid4().hex}",
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            is_json=is_json,
        )
        self._store().put(ref.key, data)
        return ref

    def move_under(self, ref: PayloadRef, prefix: str) -> PayloadRef:
        """``ref``, copied (inside the store) to a new key under ``prefix`` if not there yet.

        A reference still unresolved when a worker sends it on (the later steps of
        a chain carry their arguments' references) must name the new task's own
        object, since a task resolves and deletes only those.
        """
        if keys.is_object_key(ref.key, prefix):
            return ref
        moved = PayloadRef(f"{prefix}{uuid.uuid4().hex}", ref.size, ref.sha256, ref.is_json)
        if not self._store().copy(ref.key, moved.key):
            raise PayloadError(f"payload {ref.key} is missing or has expired")
        return moved

    def fetch(self, ref: PayloadRef) -> bytes:
        """The payload behind ``ref``, checked against its size and digest."""
        self._check_size(ref.size)
        data = self._store().get(ref.key, size_hint=ref.size)
        if data is None:
            raise PayloadError(f"payload {ref.key} is missing or has expired")
        if len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.sha256:
            raise PayloadError(f"payload {ref.key} does not match its digest")
        return data

    def discard(self, refs: list[PayloadRef]) -> None:
        """Delete consumed arguments (never anything outside ``payloads/``)."""
        store = self._store()
        for ref in refs:
            if keys.is_payload_key(ref.key):
                store.delete(ref.key)

    def _check_size(self, size: int) -> None:
        if size > self.max_payload_bytes:
            raise LimitExceeded(
                f"payload of {size} bytes is over the limit of {self.max_payload_bytes}"
            )


class _Encoder(kombu_json.JSONEncoder):
    """kombu's encoder, with large ``bytes`` checked into S3 (once per object)."""

    def __init__(
        self,
        *,
        claims: ClaimCheck | None = None,
        memo: dict[int, PayloadRef] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._claims = claims
        self._memo = {} if memo is None else memo

    def default(self, o: Any) -> Any:
        if isinstance(o, (bytes, bytearray, memoryview)):
            claims = self._claims
            if claims is not None and len(o) * _BASE64_GROWTH > claims.inline_max_bytes:
                ref = self._memo.get(id(o))
                if ref is None:
                    ref = self._memo[id(o)] = claims.check_in(bytes(o))
                return ref.marker()
            return {"__type__": "base64", "__value__": base64.b64encode(o).decode("ascii")}
        if isinstance(o, PayloadRef):
            prefix = _prefix.get()
            if self._claims is not None and prefix != keys.PAYLOADS:  # a task's or a result's
                moved = self._memo.get(id(o))
                if moved is None:
                    moved = self._memo[id(o)] = self._claims.move_under(o, prefix)
                return moved.marker()
            return o.marker()
        encoded: Any = super().default(o)  # type: ignore[no-untyped-call]
        return encoded


class Codec:
    """The ``dumps``/``loads`` pair registered as kombu's ``json`` serializer."""

    content_type = "application/json"
    content_encoding = "utf-8"

    def __init__(self, claims: ClaimCheck | None) -> None:
        self.claims = claims

    def dumps(self, obj: Any, *, whole_document: bool = True) -> str:
        """JSON text of ``obj`` that fits in a message.

        With ``whole_document=False`` (a record that lives in S3 anyway) only
        large ``bytes`` are checked in.
        """
        memo: dict[int, PayloadRef] = {}
        text = self._encode(obj, memo)
        claims = self.claims
        if not whole_document or claims is None or len(text) <= claims.inline_max_bytes:
            return text
        slimmer = self._encode(self._check_in_parts(obj, claims, memo), memo)
        if len(slimmer) <= claims.inline_max_bytes:
            return slimmer
        ref = claims.check_in(slimmer.encode("utf-8"), is_json=True)
        return json.dumps({"__type__": DOCUMENT_TYPE, "__value__": ref.to_json()})

    def _encode(self, obj: Any, memo: dict[int, PayloadRef]) -> str:
        try:
            text = self._dumps(obj, memo)
        except RecursionError:
            raise LimitExceeded(f"JSON nested deeper than {MAX_DEPTH} levels") from None
        except ValueError:
            # An integer past the int/str conversion limit (or a circular value,
            # which the walk below refuses as too deep): send long ones in hex.
            text = self._dumps(_long_ints_marked(obj), memo)
        check_depth(text)
        return text

    def _dumps(self, obj: Any, memo: dict[int, PayloadRef]) -> str:
        text: str = json.dumps(
            obj, cls=_Encoder, claims=self.claims, memo=memo, separators=(",", ":")
        )
        return text

    def _check_in_parts(self, obj: Any, claims: ClaimCheck, memo: dict[int, PayloadRef]) -> Any:
        """``obj`` with its large parts at depth two replaced by JSON references."""

        def part(value: Any) -> Any:
            if not isinstance(value, (list, tuple, dict, str)):
                return value
            text = self._encode(value, memo)
            if len(text) * _PART_SHARE <= claims.inline_max_bytes:
                return value
            return claims.check_in(text.encode("utf-8"), is_json=True)

        def parts_of(value: Any) -> Any:
            if isinstance(value, (list, tuple)):
                return [part(item) for item in value]
            if isinstance(value, dict):
                return {key: part(item) for key, item in value.items()}
            return value

        # Depth one stays as it is: Celery unpacks ``[args, kwargs, embed]`` as soon
        # as it decodes a task, so only the arguments themselves may be references.
        if isinstance(obj, (list, tuple)):
            return [parts_of(item) for item in obj]
        if isinstance(obj, dict):
            return {key: parts_of(item) for key, item in obj.items()}
        return obj

    def loads(self, data: str | bytes | bytearray | memoryview) -> Any:
        text = data if isinstance(data, str) else bytes(data).decode("utf-8")
        check_depth(text)
        try:
            return json.loads(text, object_hook=self._object_hook)
        except (json.JSONDecodeError, CloudworkerError):
            raise
        except ValueError as exc:  # a decimal integer past the int/str conversion limit
            raise LimitExceeded(f"JSON number too long to convert: {exc}") from None

    def _object_hook(self, obj: dict[str, Any]) -> Any:
        kind = obj.get("__type__") if len(obj) == 2 and "__value__" in obj else None
        if kind == INT_TYPE:
            return _long_int(obj["__value__"])
        if kind == PAYLOAD_TYPE:
            return PayloadRef.from_json(obj["__value__"])
        if kind == JSON_TYPE:
            return PayloadRef.from_json(obj["__value__"], is_json=True)
        if kind == DOCUMENT_TYPE:
            if self.claims is None:
                raise PayloadError("a claim-checked message arrived but no store is configured")
            ref = PayloadRef.from_json(obj["__value__"], is_json=True)
            # Decoding knows no task id: a stored message may be any task's payload.
            if not keys.is_payload_key(ref.key):
                raise PayloadError(f"payload reference to {ref.key!r:.120} is outside payloads/")
            return self.loads(self.claims.fetch(ref))
        return kombu_json.object_hook(obj)

    def resolve(self, value: Any, found: list[PayloadRef] | None = None, *, under: str) -> Any:
        """``value`` with every :class:`PayloadRef` in it replaced by what it stands for.

        Only references to objects checked in directly under ``under`` are
        fetched; any other raises :class:`PayloadError`. The references resolved
        are appended to ``found`` when it is given.
        """
        if isinstance(value, PayloadRef):
            if self.claims is None:
                raise PayloadError("a claim-checked payload arrived but no store is configured")
            _confine(value, under)
            if found is not None:
                found.append(value)
            data = self.claims.fetch(value)
            return self.resolve(self.loads(data), found, under=under) if value.is_json else data
        if isinstance(value, (list, tuple)):
            if not any(isinstance(item, _CONTAINERS) for item in value):
                return value
            items = [self.resolve(item, found, under=under) for item in value]
            return items if isinstance(value, list) else tuple(items)
        if isinstance(value, dict):
            return {key: self.resolve(item, found, under=under) for key, item in value.items()}
        return value


def _confine(ref: PayloadRef, under: str) -> None:
    if not keys.is_object_key(ref.key, under):
        raise PayloadError(f"payload reference to {ref.key!r:.120} is outside {under}")


def _long_int(value: Any) -> int:
    """The integer an ``cloudworker.int`` marker holds (hexadecimal: linear time)."""
    if isinstance(value, str) and _HEX_INT.fullmatch(value):
        return int(value, 16)
    raise InvalidArguments(f"malformed long integer: {value!r:.80}")


def _long_ints_marked(value: Any) -> Any:
    """``value`` with integers past the int/str conversion limit as hex markers."""
    return _long_ints_replaced(value, lambda n: {"__type__": INT_TYPE, "__value__": hex(n)})


class _LoggableInt(int):
    """An integer past the int/str conversion limit that prints short.

    Celery ``repr``s every task's arguments and result for its log and events,
    and ``str()`` of such an integer raises; this one prints its size instead.
    """

    def __repr__(self) -> str:
        return f"<integer of {self.bit_length()} bits>"

    __str__ = __repr__


def loggable(value: Any) -> Any:
    """``value`` with its integers past the int/str conversion limit printing short."""
    return _long_ints_replaced(value, _LoggableInt)


def _long_ints_replaced(value: Any, replace: Callable[[int], Any], depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise LimitExceeded(f"JSON nested deeper than {MAX_DEPTH} levels (or circular)")
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value.bit_length() <= _LONG_INT_BITS else replace(value)
    if isinstance(value, (list, tuple)):
        return [_long_ints_replaced(item, replace, depth + 1) for item in value]
    if isinstance(value, dict):
        return {key: _long_ints_replaced(item, replace, depth + 1) for key, item in value.items()}
    return value


_CONTAINERS = (PayloadRef, list, tuple, dict)


_installed: Codec | None = None


def installed() -> Codec | None:
    """The codec :func:`install` made kombu's ``json`` serializer last, if any."""
    return _installed


def install(codec: Codec) -> None:
    """Make ``codec`` kombu's ``json`` serializer in this process."""
    global _installed  # kombu's registry is process-wide; this mirrors it
    _installed = codec
    serialization.registry.register(  # type: ignore[no-untyped-call]
        "json",
        codec.dumps,
        codec.loads,
        content_type=codec.content_type,
        content_encoding=codec.content_encoding,
    )
