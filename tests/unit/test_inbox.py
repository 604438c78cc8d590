"""The S3 inbox's pure parts: reading S3 events, processing one object."""

from __future__ import annotations

import io
import json

from PIL import Image

from config import Settings
from tasks.inbox import created_keys, process_object
from tasks.objectstore import MemoryObjectStore

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
