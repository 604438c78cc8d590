"""JSON on the wire, with large payloads checked into S3 (claim-check).

An SQS message holds at most 1 MiB (256 KiB on older queues), so anything larger
travels through S3 and the message carries a small reference. It happens here,
once, in the serializer every message and result goes through (kombu's ``json``
is re-registered with this codec), so neither task functions nor callers know:

* ``bytes`` larger than the inline limit are stored raw under ``payloads/`` (or
  the prefix :func:`payload_prefix` sets) and encoded as a
  ``{"__type__": "cloudworker.payload", ...}`` reference. Decoding gives a lazy
  :class:`PayloadRef`; the receiving side calls :meth:`ClaimCheck.resolve` where
  it is cheap to block (the worker's pool child, the waiting client), never in
  the worker's consumer loop, which decodes every task body.
* A document still larger than the limit (a list of millions of integers) is
  stored whole and the message is a ``cloudworker.document`` reference, resolved
  eagerly on decode.

Every stored payload carries its SHA-256; a payload that is missing, expired or
altered raises :class:`~tasks.errors.PayloadError` instead of hanging. Small
``bytes`` are inline base64 in kombu's own ``{"__type__": "base64"}`` form.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from kombu import serialization
from kombu.utils import json as kombu_json

from tasks.errors import LimitExceeded, PayloadError
from tasks.objectstore import ObjectStore

__all__ = ["ClaimCheck", "PayloadRef", "install", "payload_prefix"]

PAYLOAD_TYPE = "cloudworker.payload"
DOCUMENT_TYPE = "cloudworker.document"
_BASE64_GROWTH = 4 / 3

_prefix: ContextVar[str] = ContextVar("cloudworker_payload_prefix", default="payloads/")


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
    """A claim ticket: where a payload is stored, its size and its digest."""

    key: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_json(cls, value: Any) -> PayloadRef:
        try:
            return cls(str(value["key"]), int(value["size"]), str(value["sha256"]))
        except (TypeError, KeyError, ValueError):
            raise PayloadError(f"malformed payload reference: {value!r:.80}") from None


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

    def check_in(self, data: bytes) -> PayloadRef:
        """Store ``data`` and return its ticket."""
        if len(data) > self.max_payload_bytes:
            raise LimitExceeded(
                f"payload of {len(data)} bytes is over the limit of {self.max_payload_bytes}"
            )
        ref = PayloadRef(
            key=f"{_prefix.get()}{uuid.uuid4().hex}",
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        self._store().put(ref.key, data)
        return ref

    def fetch(self, ref: PayloadRef) -> bytes:
        """The payload behind ``ref``, checked against its size and digest."""
        if ref.size > self.max_payload_bytes:
            raise LimitExceeded(
                f"payload of {ref.size} bytes is over the limit of {self.max_payload_bytes}"
            )
        data = self._store().get(ref.key)
        if data is None:
            raise PayloadError(f"payload {ref.key} is missing or has expired")
        if len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.sha256:
            raise PayloadError(f"payload {ref.key} does not match its digest")
        return data

    def discard(self, refs: list[PayloadRef]) -> None:
        """Delete consumed payloads."""
        store = self._store()
        for ref in refs:
            store.delete(ref.key)

    def resolve(self, value: Any, found: list[PayloadRef] | None = None) -> Any:
        """``value`` with every :class:`PayloadRef` in it replaced by its bytes.

        The refs resolved are appended to ``found`` when it is given.
        """
        if isinstance(value, PayloadRef):
            if found is not None:
                found.append(value)
            return self.fetch(value)
        if isinstance(value, (list, tuple)):
            if not any(isinstance(item, _CONTAINERS) for item in value):
                return value
            items = [self.resolve(item, found) for item in value]
            return items if isinstance(value, list) else tuple(items)
        if isinstance(value, dict):
            return {key: self.resolve(item, found) for key, item in value.items()}
        return value


_CONTAINERS = (PayloadRef, list, tuple, dict)


class _Encoder(kombu_json.JSONEncoder):
    """kombu's encoder, with large ``bytes`` checked into S3."""

    def __init__(self, *, claims: ClaimCheck | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._claims = claims

    def default(self, o: Any) -> Any:
        if isinstance(o, (bytes, bytearray, memoryview)):
            data = bytes(o)
            claims = self._claims
            if claims is not None and len(data) * _BASE64_GROWTH > claims.inline_max_bytes:
                return {"__type__": PAYLOAD_TYPE, "__value__": claims.check_in(data).to_json()}
            return {"__type__": "base64", "__value__": base64.b64encode(data).decode("ascii")}
        if isinstance(o, PayloadRef):
            return {"__type__": PAYLOAD_TYPE, "__value__": o.to_json()}
        encoded: Any = super().default(o)  # type: ignore[no-untyped-call]
        return encoded


class Codec:
    """The ``dumps``/``loads`` pair registered as kombu's ``json`` serializer."""

    content_type = "application/json"
    content_encoding = "utf-8"

    def __init__(self, claims: ClaimCheck | None) -> None:
        self.claims = claims

    def dumps(self, obj: Any, *, whole_document: bool = True) -> str:
        """JSON text of ``obj``; large bytes (and, with ``whole_document``, a large
        document) are checked in."""
        text: str = json.dumps(obj, cls=_Encoder, claims=self.claims, separators=(",", ":"))
        claims = self.claims
        if whole_document and claims is not None and len(text) > claims.inline_max_bytes:
            ref = claims.check_in(text.encode("utf-8"))
            return json.dumps({"__type__": DOCUMENT_TYPE, "__value__": ref.to_json()})
        return text

    def loads(self, data: str | bytes | bytearray | memoryview) -> Any:
        if isinstance(data, memoryview):
            data = data.tobytes()
        return json.loads(data, object_hook=self._object_hook)

    def _object_hook(self, obj: dict[str, Any]) -> Any:
        kind = obj.get("__type__") if len(obj) == 2 and "__value__" in obj else None
        if kind == PAYLOAD_TYPE:
            return PayloadRef.from_json(obj["__value__"])
        if kind == DOCUMENT_TYPE:
            if self.claims is None:
                raise PayloadError("a claim-checked message arrived but no store is configured")
            return self.loads(self.claims.fetch(PayloadRef.from_json(obj["__value__"])))
        return kombu_json.object_hook(obj)


def install(codec: Codec) -> None:
    """Make ``codec`` kombu's ``json`` serializer in this process."""
    serialization.registry.register(  # type: ignore[no-untyped-call]
        "json",
        codec.dumps,
        codec.loads,
        content_type=codec.content_type,
        content_encoding=codec.content_encoding,
    )
