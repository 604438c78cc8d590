"""The S3 inbox's pure parts: reading S3 events, processing one object."""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import pytest
from PIL import Image

from cloudworker.errors import InvalidInput
from cloudworker.objectstore import MemoryObjectStore
from cloudworker.settings import Settings
from tasks.inbox import check_inbox_key, created_keys, process_object

SETTINGS = Settings()


def event(*records: tuple[str, str]) -> str:
    return json.dumps(
        {"Records": [{"eventName": name, "s3": {"object": {"key": key}}} for name, key in records]}
    )


def test_created_keys_are_decoded_and_filtered() -> None:
    body = event(
        ("ObjectCreated:Put", "inbox/a+photo%C3%A9.jpg"),
        ("ObjectCreated:CompleteMultipartUpload", "inbox/deep/b.png"),
        ("ObjectRemoved:Delete", "inbox/c.jpg"),
        ("ObjectCreated:Put", "outbox/d.jpg"),
        ("ObjectCreated:Put", "inbox/folder/"),
    )
    assert created_keys(body, "inbox/") == ["inbox/a photoé.jpg", "inbox/deep/b.png"]


def test_under_a_base_prefix_keys_are_relative_to_it() -> None:
    body = event(
        ("ObjectCreated:Put", "team-a/inbox/a.jpg"),
        ("ObjectCreated:Put", "inbox/b.jpg"),  # another deployment's, at the root
        ("ObjectCreated:Put", "team-b/inbox/c.jpg"),
        ("ObjectCreated:Put", "team-a/outbox/d.jpg"),
    )
    assert created_keys(body, "inbox/", base="team-a/") == ["inbox/a.jpg"]


def test_test_events_and_junk_are_ignored() -> None:
    assert created_keys('{"Service": "Amazon S3", "Event": "s3:TestEvent"}', "inbox/") == []
    assert created_keys("not json", "inbox/") == []
    assert created_keys('{"Records": [{"eventName": 3}]}', "inbox/") == []


def png(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(out, "PNG")
    return out.getvalue()


def test_image_goes_grey_into_the_outbox_under_the_same_name() -> None:
    store = MemoryObjectStore()
    store.put("inbox/x/red.png", png((255, 0, 0)))
    assert process_object(store, "inbox/x/red.png", SETTINGS) == "outbox/x/red.png"
    grey = Image.open(io.BytesIO(store.objects["outbox/x/red.png"]))
    assert (grey.mode, grey.getpixel((0, 0))) == ("L", 76)
    first = store.objects["outbox/x/red.png"]
    process_object(store, "inbox/x/red.png", SETTINGS)
    assert store.objects["outbox/x/red.png"] == first  # idempotent


def test_bad_object_is_reported_once() -> None:
    store = MemoryObjectStore()
    store.put("inbox/bad.jpg", b"junk")
    assert process_object(store, "inbox/bad.jpg", SETTINGS) == "outbox/bad.jpg.error.json"
    report = json.loads(store.objects["outbox/bad.jpg.error.json"])
    assert report["key"] == "inbox/bad.jpg" and report["error"] == "InvalidImage"
    store.put("outbox/bad.jpg.error.json", b"first")
    process_object(store, "inbox/bad.jpg", SETTINGS)
    assert store.objects["outbox/bad.jpg.error.json"] == b"first"


def test_vanished_object_is_not_an_error() -> None:
    assert process_object(MemoryObjectStore(), "inbox/gone.png", SETTINGS) == ""


def test_name_reserved_for_error_reports_is_refused_with_its_own_report() -> None:
    store = MemoryObjectStore()
    store.put("inbox/a.jpg", b"junk")
    assert process_object(store, "inbox/a.jpg", SETTINGS) == "outbox/a.jpg.error.json"
    a_report = store.objects["outbox/a.jpg.error.json"]
    store.put("inbox/a.jpg.error.json", png((0, 0, 255)))  # a valid image
    written = process_object(store, "inbox/a.jpg.error.json", SETTINGS)
    assert written == "outbox/a.jpg.error.json.error.json"
    assert store.objects["outbox/a.jpg.error.json"] == a_report  # not overwritten
    report = json.loads(store.objects[written])
    assert report == {
        "key": "inbox/a.jpg.error.json",
        "error": "InvalidInput",
        "reason": "names ending in .error.json are reserved for error reports",
    }
    assert [k for k in store.objects if k.startswith("outbox/")] == [
        "outbox/a.jpg.error.json",
        written,
    ]


def test_reserved_name_is_refused_before_the_image_is_written() -> None:
    store = MemoryObjectStore()
    store.put("inbox/b.png.error.json", png((0, 255, 0)))
    process_object(store, "inbox/b.png.error.json", SETTINGS)
    assert "outbox/b.png.error.json" not in store.objects


def test_created_keys_keep_reserved_names_for_process_object_to_report() -> None:
    body = event(("ObjectCreated:Put", "inbox/a.jpg.error.json"))
    assert created_keys(body, "inbox/") == ["inbox/a.jpg.error.json"]


class UntouchableStore(MemoryObjectStore):
    """A store that fails the test if it is read or written."""

    def get(
        self, key: str, *, size_hint: int | None = None, max_bytes: int | None = None
    ) -> bytes | None:
        raise AssertionError(f"read {key}")

    def put(self, key: str, data: bytes, **options: Any) -> bool:
        raise AssertionError(f"wrote {key}")


@pytest.mark.parametrize(
    "key", ["outbox/x.png", "inbox", "inbox/", "inbox/folder/", "", "inboxes/x.png", "x/inbox/y"]
)
def test_keys_outside_the_inbox_are_refused_untouched(key: str) -> None:
    with pytest.raises(InvalidInput, match="is not an object under the inbox prefix 'inbox/'"):
        process_object(UntouchableStore(), key, SETTINGS)
    with pytest.raises(InvalidInput, match="is not an object under the inbox prefix 'inbox/'"):
        check_inbox_key(key, SETTINGS)


def test_created_keys_apply_the_same_key_rule() -> None:
    keys = ["inbox/", "inbox/x.png", "outbox/x.png", "inbox/d/", "inbox/d/y.png", ""]
    body = event(*(("ObjectCreated:Put", key) for key in keys))
    accepted = created_keys(body, "inbox/")
    assert accepted == ["inbox/x.png", "inbox/d/y.png"]
    for key in accepted:
        check_inbox_key(key, SETTINGS)


def test_an_inbox_object_over_the_size_limit_is_reported_unread() -> None:
    """A 1 GiB upload took the pool process to 1,132 MB before it was refused."""
    store = MemoryObjectStore()
    store.put("inbox/huge.jpg", b"\xff" * 2001)
    settings = dataclasses.replace(SETTINGS, inbox_max_bytes=2000)
    assert process_object(store, "inbox/huge.jpg", settings) == "outbox/huge.jpg.error.json"
    report = json.loads(store.objects["outbox/huge.jpg.error.json"])
    assert report["error"] == "LimitExceeded"
    assert "2,001 bytes, over the limit of 2,000" in report["reason"]
