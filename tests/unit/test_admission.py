"""What the worker checks in a task message and its arguments (pure checks, no endpoint)."""

from __future__ import annotations

from typing import Any

import pytest

from cloudworker.application import create_app
from cloudworker.codec import PayloadRef
from cloudworker.errors import InvalidArguments, InvalidImage, InvalidInput, InvalidNumbers
from cloudworker.objectstore import MemoryObjectStore
from cloudworker.queues import MemoryQueueService
from cloudworker.results.mailbox import reply_address_problem
from cloudworker.services import Services
from cloudworker.settings import Settings
from cloudworker.worker.admission import body_problem, message_problem
from tasks.definitions import register

SETTINGS = Settings(queue_prefix="cw-", max_integers=5)
GOOD_HEADERS: dict[str, Any] = {
    "lang": "py",
    "task": "tasks.compute_stats",
    "id": "0b7cbd1e-6a4e-4a43-9c5e-3c1f7d0b9c2a",
    "root_id": "0b7cbd1e-6a4e-4a43-9c5e-3c1f7d0b9c2a",
    "parent_id": None,
    "group": None,
    "retries": 0,
    "timelimit": [None, 30],
    "eta": "2026-12-02T03:00:00.123456+00:00",
    "expires": None,
    "argsrepr": "([1, 2],)",
    "kwargsrepr": "{}",
    "origin": "gen1@host",
    "ignore_result": False,
}
GOOD_PROPERTIES: dict[str, Any] = {
    "correlation_id": GOOD_HEADERS["id"],
    "reply_to": "cw-resp-0123456789abcdef0123456789abcdef",
    "priority": 0,
}


def test_a_message_as_celery_sends_it_passes() -> None:
    assert message_problem(GOOD_HEADERS, GOOD_PROPERTIES, SETTINGS) is None
    assert message_problem({**GOOD_HEADERS, "eta": None}, {}, SETTINGS) is None
    stamped = {"stamped_headers": ["monitoring_id"], "stamps": {"monitoring_id": [1234, "ab"]}}
    assert message_problem({**GOOD_HEADERS, **stamped}, GOOD_PROPERTIES, SETTINGS) is None


@pytest.mark.parametrize(
    ("header", "value", "problem"),
    [
        ("id", None, "task id None"),
        ("id", 7, "task id 7"),
        ("id", "a/b", "task id 'a/b'"),
        ("id", "x" * 201, "task id"),
        ("id", "tab\there", "task id"),
        ("task", ["x"], "task must be text"),
        ("eta", "tomorrow", "eta is not an ISO 8601 date"),
        ("eta", 1700000000, "eta must be an ISO 8601 date"),
        ("eta", "99999-01-01", "eta is not an ISO 8601 date"),
        ("expires", {"a": 1}, "expires must be an ISO 8601 date"),
        ("countdown", "10", "countdown must be a number"),
        ("countdown", True, "countdown must be a number"),
        ("retries", -1, "retries must be a small non-negative integer"),
        ("retries", 1.5, "retries must be"),
        ("retries", 2**40, "retries must be"),
        ("timelimit", 30, "timelimit must be [soft, hard]"),
        ("timelimit", [1, 2, 3], "timelimit must be"),
        ("timelimit", ["1", None], "timelimit must be"),
        ("timelimit", [-1, None], "timelimit must be"),
        ("group_index", "0", "group_index must be"),
        ("argsrepr", "x" * 20_000, "argsrepr must be text of at most"),
        ("ignore_result", "yes", "ignore_result must be true, false or null"),
        ("stamps", [1], "stamps must be an object"),
        ("stamps", {"m": {"a": 1}}, "stamps 'm' must be text, a number"),
        ("stamps", {"m": [[1]]}, "stamps 'm' must be text, a number"),
        ("stamped_headers", "m", "stamped_headers must be a list of stamp names"),
        ("stamped_headers", [[1]], "stamped_headers must be a list of stamp names"),
        ("stamped_headers", [{"a": 1}], "stamped_headers must be a list of stamp names"),
        ("stamped_headers", ["x" * 201], "stamped_headers must be a list of stamp names"),
        ("parent_id", 5, "parent_id must be text"),
        ("group", "a/b c", "group must be 1 to 200 letters, digits or any of _.:@+=-"),
        ("argsrepr", "a \ud800 lone surrogate", "argsrepr must be text"),
        ("chain", [{"task": "x"}], "header 'chain' is reserved"),
        ("kwargs", {}, "header 'kwargs' is reserved"),
        ("update", 5, "header 'update' is reserved"),
        ("__dict__", {}, "header '__dict__' is reserved"),
    ],
)
def test_a_header_of_the_wrong_type_is_named(header: str, value: Any, problem: str) -> None:
    found = message_problem({**GOOD_HEADERS, header: value}, GOOD_PROPERTIES, SETTINGS)
    assert found is not None
    assert found.startswith(problem), found


@pytest.mark.parametrize(
    ("headers", "properties", "problem"),
    [
        ([1], {}, "headers and properties must be JSON objects"),
        (GOOD_HEADERS, "p", "headers and properties must be JSON objects"),
        ({"id": "x"}, {}, "not a task protocol 2 message (no task header)"),
        (GOOD_HEADERS, {"priority": "high"}, "priority must be an integer"),
        (
            GOOD_HEADERS,
            {"correlation_id": 5},
            "correlation_id must be text of at most 200 characters",
        ),
    ],
)
def test_a_broken_envelope_is_named(headers: Any, properties: Any, problem: str) -> None:
    assert message_problem(headers, properties, SETTINGS) == problem


@pytest.mark.parametrize(
    "reply_to",
    [None, "", "cw-resp-0123456789abcdef0123456789abcdef", "cw-resp-x_y-z"],
)
def test_replies_go_only_to_response_queues_of_this_deployment(reply_to: Any) -> None:
    assert reply_address_problem(reply_to, SETTINGS) is None


@pytest.mark.parametrize(
    "reply_to", ["cw-resp-", "other-resp-1", "cw-tasks", "cw-resp-a/b", "cw-resp-" + "a" * 80, 5]
)
def test_any_other_reply_address_is_refused(reply_to: Any) -> None:
    problem = reply_address_problem(reply_to, SETTINGS)
    assert problem is not None
    assert "is not a response queue of this deployment (cw-resp-...)" in problem


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ([[1], {}, {}], None),
        (([1], {}, None), None),
        ([[], {}, {"callbacks": [{"task": "x"}], "chain": None, "chord": {"task": "y"}}], None),
        ([[], {}, {"callbacks": [{"x": 1}]}], "embed.callbacks must be a list of signatures"),
        ([[], {}, {"chain": [{"task": 5}]}], "embed.chain must be a list of signatures"),
        (
            [[], {}, {"chain": [{"task": "t", "args": 5}]}],
            "embed.chain must be a list of signatures",
        ),
        ([[], {}, {"chord": {"task": "t", "kwargs": []}}], "embed.chord must be a signature"),
        ({"args": []}, "the body must be [args, kwargs, embed]"),
        ([[1], {}], "the body must be [args, kwargs, embed]"),
        ([{"a": 1}, {}, {}], "args must be a list"),
        ([[1], [], {}], "kwargs must be an object"),
        ([[1], {}, 5], "embed must be an object"),
        ([[1], {}, {"errbacks": [1]}], "embed.errbacks must be a list of signatures"),
        ([[1], {}, {"chain": {"task": "x"}}], "embed.chain must be a list of signatures"),
        ([[1], {}, {"chord": []}], "embed.chord must be a signature"),
    ],
)
def test_the_body_must_have_celerys_shape(body: Any, problem: str | None) -> None:
    assert body_problem(body) == problem


@pytest.fixture(scope="module")
def tasks() -> Any:
    store, queues = MemoryObjectStore(), MemoryQueueService()
    services = Services(SETTINGS, store=lambda: store, queues=lambda: queues)
    return register(create_app(SETTINGS, services=services))


REF = PayloadRef("payloads/t/" + "0" * 32, 10, "0" * 64)


@pytest.mark.parametrize(
    ("task", "args", "kwargs", "error", "message"),
    [
        ("compute_stats", [], {}, InvalidArguments, "missing a required argument: 'numbers'"),
        ("compute_stats", [[1], 2], {}, InvalidArguments, "too many positional arguments"),
        ("compute_stats", [[1]], {"x": 1}, InvalidArguments, "unexpected keyword argument 'x'"),
        ("compute_stats", {"numbers": [1]}, {}, InvalidArguments, "args must be a list"),
        ("compute_stats", ["1 2"], {}, InvalidNumbers, "expected a list of integers, got str"),
        ("compute_stats", [[]], {}, InvalidNumbers, "no integers given"),
        ("compute_stats", [[1, [2]]], {}, InvalidNumbers, "item 1 is not an integer: [2]"),
        ("compute_stats", [[1, None]], {}, InvalidNumbers, "item 1 is not an integer: None"),
        ("compute_stats", [[1] * 6], {}, InvalidInput, "too many integers: 6 given"),
        ("compute_stats", [REF], {}, InvalidNumbers, "not bytes"),
        ("grayscale_image", [[1]], {}, InvalidImage, "image must be bytes, not list"),
        ("grayscale_image", [b"x", 123], {}, InvalidImage, "output format must be"),
        ("grayscale_image", [b"x"], {"format": "nope"}, InvalidImage, "unsupported output"),
        ("process_inbox_object", [5], {}, InvalidInput, "key must be an S3 key"),
        ("process_inbox_object", ["results/x"], {}, InvalidInput, "not an object under"),
    ],
)
def test_arguments_that_do_not_fit_are_refused_with_a_typed_error(  # noqa: PLR0917
    tasks: Any, task: str, args: Any, kwargs: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        getattr(tasks, task).admit(args, kwargs)
    assert message in str(raised.value)


def test_arguments_that_fit_are_admitted(tasks: Any) -> None:
    tasks.compute_stats.admit([[1, -2, 10**40]], {})
    tasks.compute_stats.admit([], {"numbers": (1, 2)})
    tasks.compute_stats.admit([PayloadRef(REF.key, 10, REF.sha256, is_json=True)], {})
    tasks.grayscale_image.admit([b"\xff\xd8", "png"], {})
    tasks.grayscale_image.admit([REF], {"format": None})
    tasks.process_inbox_object.admit(["inbox/a.jpg"], {})


def test_a_wrong_argument_count_is_also_celerys_type_error(tasks: Any) -> None:
    with pytest.raises(TypeError):
        tasks.compute_stats.delay()
