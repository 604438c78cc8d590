"""Where results and large payloads are kept: a small interface over S3.

The rest of cloudworker sees only :class:`ObjectStore`: a few operations on
bytes under string keys. :class:`S3ObjectStore` is the real one;
:class:`MemoryObjectStore` is the stub for unit tests of pure logic.

Keys are the layout of :mod:`cloudworker.keys` (``results/<id>.json``...). An
:class:`S3ObjectStore` puts them under its base prefix (``CLOUDWORKER_S3_PREFIX``)
on the way out and takes it off listings on the way back, so that no other
module knows where in the bucket a deployment lives; with a KMS key
(``CLOUDWORKER_KMS_KEY``) every object it writes is encrypted with it (SSE-KMS),
whatever the bucket's default encryption.
"""

from __future__ import annotations

import io
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from cloudworker.errors import LimitExceeded

__all__ = ["Listed", "MemoryObjectStore", "ObjectStore", "S3ObjectStore"]


@dataclass(frozen=True)
class Listed:
    """One object of a listing: its key and when it was last written."""

    key: str
    last_modified: datetime


class ObjectStore(ABC):
    """Bytes under keys, with a write that only the first writer wins."""

    @abstractmethod
    def put(
        self, key: str, data: bytes, *, only_if_absent: bool = False, replacing: str | None = None
    ) -> bool:
        """Store ``data`` at ``key``.

        With ``only_if_absent`` the write happens only when nothing is stored at
        ``key`` yet, atomically; with ``replacing`` (an ETag from :meth:`read`),
        only when what is stored there is still that version. The return value
        says whether it happened.
        """

    @abstractmethod
    def read(self, key: str) -> tuple[bytes, str] | None:
        """The bytes at ``key`` and their version (ETag), or ``None``."""

    @abstractmethod
    def get(
        self, key: str, *, size_hint: int | None = None, max_bytes: int | None = None
    ) -> bytes | None:
        """The bytes at ``key``, or ``None`` when there is nothing there.

        ``size_hint`` (the expected size, when known) lets a large object be
        fetched in parallel parts. An object larger than ``max_bytes`` raises
        :class:`~cloudworker.errors.LimitExceeded` before its body is read.
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""

    @abstractmethod
    def copy(self, source: str, target: str) -> bool:
        """Copy ``source`` to ``target`` inside the store; False when ``source`` is missing."""

    @abstractmethod
    def list(self, prefix: str) -> list[Listed]:
        """Every object under ``prefix``, in key order.

        S3 listings are strongly consistent: an object whose write returned is
        listed, which is what lets a count of listed objects decide who is last.
        """

    @abstractmethod
    def delete_many(self, keys: Iterable[str]) -> None:
        """Remove ``keys`` (missing ones are not an error), up to 1,000 a request."""


#: Objects larger than this move in parts (multipart upload, ranged downloads).
MULTIPART_BYTES = 16 * 1024 * 1024


class S3ObjectStore(ObjectStore):
    """An :class:`ObjectStore` on one S3 bucket.

    Large objects go through boto3's transfer manager: multipart uploads and
    ranged downloads of 16 MiB parts, four at a time, so a failed part is
    retried alone and large payloads move at several connections' speed.
    """

    def __init__(self, s3: Any, bucket: str, *, prefix: str = "", kms_key: str = "") -> None:
        self._s3 = s3
        self.bucket = bucket
        self.prefix = prefix
        #: What every write adds to its request: SSE-KMS under the chosen key, if any.
        self._encryption: dict[str, str] = (
            {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key} if kms_key else {}
        )
        self._transfer = TransferConfig(
            multipart_threshold=MULTIPART_BYTES,
            multipart_chunksize=MULTIPART_BYTES,
            max_concurrency=4,
        )

    def put(
        self, key: str, data: bytes, *, only_if_absent: bool = False, replacing: str | None = None
    ) -> bool:
        conditional = only_if_absent or replacing is not None
        if len(data) > MULTIPART_BYTES and not conditional:
            self._s3.upload_fileobj(
                io.BytesIO(data),
                self.bucket,
                self.prefix + key,
                ExtraArgs=self._encryption or None,
                Config=self._transfer,
            )
            return True
        extra = {"IfNoneMatch": "*"} if only_if_absent else {}
        if replacing is not None:
            extra["IfMatch"] = replacing
        try:
            self._s3.put_object(
                Bucket=self.bucket, Key=self.prefix + key, Body=data, **extra, **self._encryption
            )
        except ClientError as exc:
            # 412: someone stored it first (or replaced it). 409: a concurrent conditional
            # write to the same key is in flight; it will win or fail on its own.
            if conditional and _status(exc) in (404, 409, 412):
                return False
            raise
        return True

    def read(self, key: str) -> tuple[bytes, str] | None:
        response = self._get_object(key)
        if response is None:
            return None
        body: bytes = response["Body"].read()
        return body, str(response["ETag"])

    def _get_object(self, key: str) -> dict[str, Any] | None:
        """S3's answer to a GET of ``key`` (its body not read yet), or None if missing."""
        try:
            response: dict[str, Any] = self._s3.get_object(
                Bucket=self.bucket, Key=self.prefix + key
            )
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise
        return response

    def get(
        self, key: str, *, size_hint: int | None = None, max_bytes: int | None = None
    ) -> bytes | None:
        if size_hint is not None and size_hint > MULTIPART_BYTES and max_bytes is None:
            buffer = io.BytesIO()
            try:
                self._s3.download_fileobj(
                    self.bucket, self.prefix + key, buffer, Config=self._transfer
                )
            except ClientError as exc:
                if _status(exc) == 404:
                    return None
                raise
            return buffer.getvalue()
        response = self._get_object(key)
        if response is None:
            return None
        if max_bytes is not None and int(response.get("ContentLength") or 0) > max_bytes:
            response["Body"].close()  # the headers came first: the body is never read
            raise _too_large(key, int(response["ContentLength"]), max_bytes)
        body: bytes = response["Body"].read()
        return body

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=self.prefix + key)

    def copy(self, source: str, target: str) -> bool:
        try:
            self._s3.copy_object(
                Bucket=self.bucket,
                Key=self.prefix + target,
                CopySource={"Bucket": self.bucket, "Key": self.prefix + source},
                **self._encryption,
            )
        except ClientError as exc:
            if _status(exc) == 404:
                return False
            raise
        return True

    def list(self, prefix: str) -> list[Listed]:
        listed: list[Listed] = []
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix
        )
        start = len(self.prefix)
        for page in pages:
            listed.extend(
                Listed(item["Key"][start:], item["LastModified"])
                for item in page.get("Contents", ())
            )
        return listed

    def delete_many(self, keys: Iterable[str]) -> None:
        batch = list(keys)
        for start in range(0, len(batch), 1000):
            objects = [{"Key": self.prefix + key} for key in batch[start : start + 1000]]
            self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})


class MemoryObjectStore(ObjectStore):
    """An in-process :class:`ObjectStore` for unit tests."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.written: dict[str, datetime] = {}
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()

    def put(
        self, key: str, data: bytes, *, only_if_absent: bool = False, replacing: str | None = None
    ) -> bool:
        with self._lock:
            if only_if_absent and key in self.objects:
                return False
            if replacing is not None and self._etag(key) != replacing:
                return False
            self.objects[key] = bytes(data)
            self.written[key] = datetime.now(UTC)
            self._versions[key] = self._versions.get(key, 0) + 1
            return True

    def read(self, key: str) -> tuple[bytes, str] | None:
        with self._lock:
            data = self.objects.get(key)
            return None if data is None else (data, str(self._etag(key)))

    def _etag(self, key: str) -> str | None:
        return f'"{key}-{self._versions.get(key, 0)}"' if key in self.objects else None

    def get(
        self, key: str, *, size_hint: int | None = None, max_bytes: int | None = None
    ) -> bytes | None:
        data = self.objects.get(key)
        if data is not None and max_bytes is not None and len(data) > max_bytes:
            raise _too_large(key, len(data), max_bytes)
        return data

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)
        self.written.pop(key, None)

    def copy(self, source: str, target: str) -> bool:
        with self._lock:
            if source not in self.objects:
                return False
            self.objects[target] = self.objects[source]
            self.written[target] = datetime.now(UTC)
            return True

    def list(self, prefix: str) -> list[Listed]:
        with self._lock:
            return [
                Listed(key, self.written.get(key, datetime.now(UTC)))
                for key in sorted(self.objects)
                if key.startswith(prefix)
            ]

    def delete_many(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.delete(key)


def _too_large(key: str, size: int, max_bytes: int) -> LimitExceeded:
    return LimitExceeded(f"{key} holds {size:,} bytes, over the limit of {max_bytes:,}")


def _status(exc: ClientError) -> int:
    status: int = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return status
