"""Images to drop into the inbox, and a wait for the object the worker writes back."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from tests.support.waiting import eventually

__all__ = ["jpeg", "wait_for_object"]


def jpeg(color: tuple[int, int, int]) -> bytes:
    """A 120x80 JPEG of one ``color``."""
    out = io.BytesIO()
    Image.new("RGB", (120, 80), color).save(out, "JPEG", quality=95)
    return out.getvalue()


def wait_for_object(s3: Any, bucket: str, key: str, timeout: float = 30) -> dict[str, Any]:
    """``GetObject`` of ``key`` once it exists (within ``timeout`` seconds)."""

    def found() -> dict[str, Any] | None:
        try:
            return dict(s3.get_object(Bucket=bucket, Key=key))
        except s3.exceptions.NoSuchKey:
            return None

    return eventually(found, timeout=timeout, interval=0.2, what=f"{key} appeared")
