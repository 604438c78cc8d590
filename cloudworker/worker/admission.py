"""What a worker checks in a task message before the message can cost anything.

Celery hands every task message to its task's *strategy* (``Task.Strategy``) in
the consumer's event loop, before the request is handed to the pool, which
pickles it. :func:`strategy` is Celery's default strategy behind three checks,
each on what the one before it let through:

1. **The message** (:func:`message_problem`): task protocol 2; every header and
   property Celery reads has the type Celery expects (``id``, ``task``, ``eta``,
   ``expires``, ``retries``, ``timelimit``, ``countdown``...), and the trace
   context OpenTelemetry's instrumentation reads is bounded text (``traceparent``,
   ``tracestate``, ``baggage``: :mod:`cloudworker.tracing`); ``reply_to`` is
   a response queue of this deployment or empty; the body decodes (nesting depth
   and long integers are bounded by :mod:`cloudworker.codec`) into
   ``[args, kwargs, embed]`` of the right types. A message that fails is broken:
   :class:`~celery.exceptions.InvalidTaskError` sends it to the worker's
   :class:`~cloudworker.worker.consumer.Consumer`, which moves it to the dead-letter queue
   with the reason and answers the caller with
   :class:`~cloudworker.errors.InvalidMessage` when it can.
2. **The arguments** (:meth:`~cloudworker.task.CloudworkerTask.admit`): they bind to
   the task's signature and pass the task's own check (types and sizes of what
   is inline; claim-checked values are checked once resolved, in the pool).
   Arguments that fail are the caller's error, not a broken message: the task
   fails at once with the typed :class:`~cloudworker.errors.InvalidInput`, the caller
   gets it, and the message is acknowledged.
3. Everything else is Celery's own strategy, unchanged.

So no value a JSON message can carry reaches the pool unless it is what the task
expects, and no refusal costs a traceback in the log or a redelivery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from celery import Task
from celery.app.task import Context
from celery.exceptions import InvalidTaskError
from celery.utils.time import maybe_iso8601
from celery.worker.strategy import default as default_strategy

from cloudworker.codec import PayloadRef
from cloudworker.errors import InvalidInput
from cloudworker.keys import check_task_id
from cloudworker.results.mailbox import reply_address_problem
from cloudworker.settings import Settings

__all__ = ["answer", "body_problem", "message_problem", "strategy"]

log = logging.getLogger(__name__)

#: Longest ``argsrepr``/``kwargsrepr`` (Celery's own default is 1,024): they are logged.
_MAX_REPR = 16_384
#: Longest task name and other ids Celery keeps in headers.
_MAX_NAME = 200
_EMBED_LISTS = ("callbacks", "errbacks", "chain")

Check = Callable[[Any], str | None]


def _optional(kind: type | tuple[type, ...], what: str) -> Check:
    def check(value: Any) -> str | None:
        if value is None or (isinstance(value, kind) and not isinstance(value, bool)):
            return None
        return f"must be {what}"

    return check


def _text(most: int) -> Check:
    def check(value: Any) -> str | None:
        if value is None or (isinstance(value, str) and len(value) <= most and _encodable(value)):
            return None
        return f"must be text of at most {most} characters"

    return check


def _encodable(text: str) -> bool:
    """Whether ``text`` is valid Unicode (JSON can carry lone surrogates, which
    make the worker's log and anything else that encodes them fail)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_short_text = _text(_MAX_NAME)
_repr_text = _text(_MAX_REPR)
#: W3C's limit for a baggage header; OpenTelemetry ignores longer trace context anyway.
_trace_text = _text(8192)


def _date(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        return "must be an ISO 8601 date"
    try:
        parsed = maybe_iso8601(value)
        if isinstance(parsed, datetime):
            parsed.timestamp()
    except (ValueError, TypeError, OverflowError, AttributeError):
        return f"is not an ISO 8601 date: {value!r:.60}"
    return None


def _time_limits(value: Any) -> str | None:
    if value is None:
        return None
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(
            item is None or (isinstance(item, (int, float)) and not isinstance(item, bool))
            for item in value
        )
        and all(item is None or 0 <= item < 10**9 for item in value)
    ):
        return None
    return "must be [soft, hard] seconds (numbers or null)"


def _count(value: Any) -> str | None:
    if value is None or (type(value) is int and 0 <= value < 2**31):
        return None
    return "must be a small non-negative integer"


def _flag(value: Any) -> str | None:
    return None if value is None or isinstance(value, bool) else "must be true, false or null"


def _group_id(value: Any) -> str | None:
    """A chord's header group id names its bookkeeping in S3 (``chords/<id>/``)."""
    if value is None:
        return None
    try:
        check_task_id(value)
    except InvalidInput:
        return "must be 1 to 200 letters, digits or any of _.:@+=-"
    return None


def _stamp_names(value: Any) -> str | None:
    """Celery looks each name up in dicts (``Request.revoked``): only text can be a key."""
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(n, str) and not _short_text(n) for n in value):
        return None
    return "must be a list of stamp names (text)"


_SCALARS = (str, int, float, bool, type(None))


def _stamps(value: Any) -> str | None:
    """Celery compares stamp values with the revoked ones, and makes sets of them when it
    terminates by stamped headers: text, numbers, true, false, null, or lists of those."""
    if value is None:
        return None
    if not isinstance(value, dict):
        return "must be an object"
    for name, stamp in value.items():
        items = stamp if isinstance(stamp, list) else [stamp]
        if not all(isinstance(item, _SCALARS) for item in items):
            return f"{name!r:.40} must be text, a number, true, false, null or a list of those"
    return None


#: Every protocol-2 header Celery's worker reads (and the trace context), with what it must hold.
_HEADERS: dict[str, Check] = {
    "lang": _short_text,
    "task": _short_text,
    "shadow": _short_text,
    "root_id": _short_text,
    "parent_id": _short_text,
    "group": _group_id,
    "origin": _short_text,
    "eta": _date,
    "expires": _date,
    "countdown": _optional((int, float), "a number of seconds"),
    "retries": _count,
    "group_index": _count,
    "replaced_task_nesting": _count,
    "timelimit": _time_limits,
    "argsrepr": _repr_text,
    "kwargsrepr": _repr_text,
    "ignore_result": _flag,
    "stamped_headers": _stamp_names,
    "stamps": _stamps,
    # Read by OpenTelemetry's Celery instrumentation (cloudworker/tracing.py) in the pool,
    # whose propagators fail on text that is not Unicode and log an oversized value whole.
    "traceparent": _trace_text,
    "tracestate": _trace_text,
    "baggage": _trace_text,
}

#: Every header becomes an attribute of the task's request (Celery's ``Context``):
#: one named like a part of the request set from elsewhere (the body, the message's
#: properties, the worker) or like a method of ``Context`` would replace it.
_RESERVED_HEADERS = frozenset(
    {
        "args",
        "kwargs",
        "callbacks",
        "errbacks",
        "chain",
        "chord",
        "is_eager",
        "called_directly",
        "delivery_info",
        "hostname",
        "properties",
        "reply_to",
        "correlation_id",
    }
    | {
        name
        for name, value in vars(Context).items()
        if callable(value) or isinstance(value, property)
    }
)

_PROPERTIES: dict[str, Check] = {
    "correlation_id": _short_text,
    "priority": _optional(int, "an integer"),
    # Any producer's address: a stock Celery producer's (its app's thread_oid, a UUID)
    # is run too, its result stored in S3, with no notice pushed (the Notifier pushes
    # only to this deployment's response queues): a fleet can move over gradually.
    "reply_to": _short_text,
}


def message_problem(headers: Any, properties: Any, settings: Settings) -> str | None:
    """Why a task message's headers and properties cannot be run as they are, if they cannot."""
    if not isinstance(headers, dict) or not isinstance(properties, dict):
        return "headers and properties must be JSON objects"
    if "task" not in headers:
        return "not a task protocol 2 message (no task header)"
    try:
        check_task_id(headers.get("id"))
    except InvalidInput as exc:
        return str(exc)
    reserved = {name for name in headers if name in _RESERVED_HEADERS or name.startswith("_")}
    if reserved:
        return f"header {min(reserved)!r} is reserved for Celery's own request"
    for table, where in ((_HEADERS, headers), (_PROPERTIES, properties)):
        for name, check in table.items():
            problem = check(where.get(name))
            if problem is not None:
                return f"{name} {problem}"
    return None


def body_problem(body: Any) -> str | None:
    """Why a decoded task body is not ``[args, kwargs, embed]`` as Celery needs it."""
    if not isinstance(body, (list, tuple)) or len(body) != 3:
        return "the body must be [args, kwargs, embed]"
    args, kwargs, embed = body
    if not isinstance(args, (list, tuple)):
        return "args must be a list"
    if not isinstance(kwargs, dict):
        return "kwargs must be an object"
    if embed is None:
        return None
    if not isinstance(embed, dict):
        return "embed must be an object"
    for name in _EMBED_LISTS:
        value = embed.get(name)
        if not _stored(value) and not _signatures(value):
            return f"embed.{name} must be a list of signatures"
    chord = embed.get("chord")
    if not _stored(chord) and not _signature(chord):
        return "embed.chord must be a signature"
    return None


def _signatures(value: Any) -> bool:
    return isinstance(value, list) and all(_signature(item) for item in value)


def _signature(value: Any) -> bool:
    """Whether ``value`` has the shape of a Celery signature (Celery reads these keys)."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("task"), str)
        and isinstance(value.get("args", []), (list, tuple))
        and isinstance(value.get("kwargs", {}), dict)
        and isinstance(value.get("options", {}), dict)
    )


def _stored(value: Any) -> bool:
    """Nothing, or a large part of the canvas checked in as JSON (resolved in the pool)."""
    return value is None or (isinstance(value, PayloadRef) and value.is_json)


def strategy(task: Task, app: Any, consumer: Any, **options: Any) -> Callable[..., Any]:
    """Celery's default strategy for ``task``, behind the checks described above."""
    handle = default_strategy(task, app, consumer, **options)
    settings: Settings = app.services.settings

    def admit_then_handle(
        message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kwargs: Any
    ) -> Any:
        problem = message_problem(message.headers, message.properties, settings)
        if problem is None and body is not None:
            problem = "not a task protocol 2 message"
        if problem is None:
            problem = body_problem(message.payload)  # a DecodeError goes to the consumer too
        if problem is not None:
            raise InvalidTaskError(problem)
        args, kwargs_, embed = message.payload
        try:
            task.admit(args, kwargs_)
        except InvalidInput as exc:
            _fail_at_once(task, message, embed or {}, exc)
            return None
        return handle(message, body, ack, reject, callbacks, **kwargs)

    return admit_then_handle


def _fail_at_once(task: Task, message: Any, embed: Mapping[str, Any], exc: InvalidInput) -> None:
    """Answer a task whose arguments were refused with ``exc``, and acknowledge it."""
    log.warning("task %s[%s] refused: %s", task.name, message.headers["id"], exc)
    try:
        answer(task.backend, message, exc, task.app.services.settings, embed=embed)
    finally:
        message.ack()


def answer(
    backend: Any,
    message: Any,
    exc: Exception,
    settings: Settings,
    *,
    embed: Mapping[str, Any] | None = None,
) -> None:
    """Store ``exc`` as the failure of the task ``message`` names, and notify its caller.

    Nothing happens for a message with no usable task id; the response queue is
    notified only when ``reply_to`` is one of this deployment's. Like Celery's
    refusal of an unknown task this runs in the consumer, so no errback is
    called (an errback may be any task's code); the chain and the chord the task
    belongs to (from ``embed``) learn of the failure as usual.
    """
    headers, properties = message.headers, message.properties
    if not isinstance(headers, dict) or not isinstance(properties, dict):
        return
    try:
        task_id = check_task_id(headers.get("id"))
    except InvalidInput:
        return
    reply_to = properties.get("reply_to")
    embed = embed or {}
    request = {
        "id": task_id,
        "task": str(headers.get("task")),
        "reply_to": None if reply_address_problem(reply_to, settings) else reply_to,
        "correlation_id": properties.get("correlation_id"),
        "root_id": headers.get("root_id"),
        "parent_id": headers.get("parent_id"),
        "group": headers.get("group"),
        "group_index": headers.get("group_index"),
        "chord": embed.get("chord"),
        "chain": embed.get("chain"),
        "errbacks": None,
        "ignore_result": headers.get("ignore_result"),
    }
    backend.mark_as_failure(task_id, exc, request=Context(request), call_errbacks=False)
