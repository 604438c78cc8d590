"""What a request to in-region AWS costs in time, modelled for the local endpoint (#12).

moto and ministack answer on loopback in about a millisecond, so a design that puts five
requests on a task's critical path looks as fast there as one that puts two. In-region AWS
answers an SQS call in about 10 ms and an S3 call in tens of ms (figures and sources in
``bench/LATENCY.md``). This module models that cost so the fault proxy
(:class:`tests.support.faultproxy.FaultProxy`, ``latency=``) can add it to every request,
and so :func:`floor` can say what a sequence of requests costs at the least.

The model, per operation (``service:Operation`` as :func:`tests.support.faultproxy.operation_of`
names it, with S3 listings told apart by :func:`operation_name`):

- a log-normal service time given by its median and its 99th percentile: request latencies
  are skewed to the right, and two quantiles are what published measurements give;
- plus a transfer term, bytes / ``bytes_per_second``, for the request body and the response
  body, so a 12 MB S3 PUT costs more than a 1 KB one.

Profiles: ``none`` (adds nothing: today's behaviour) and ``aws`` (the in-region figures). The
environment variable ``CLOUDWORKER_LATENCY`` picks one, or names a JSON file that overrides
figures (:func:`load`). Draws take a caller's seeded :class:`random.Random`, so runs repeat.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "AWS",
    "ENV",
    "NONE",
    "PROFILES",
    "Latency",
    "LatencyConfigError",
    "Model",
    "draw",
    "floor",
    "from_env",
    "from_spec",
    "latency_of",
    "load",
    "median",
    "operation_name",
    "profile",
    "service_time",
    "transfer",
]

#: The environment variable naming the profile (``none``, ``aws``) or a JSON file.
ENV = "CLOUDWORKER_LATENCY"

#: The standard normal's 99th percentile: p99 = median * exp(Z99 * sigma) for a log-normal.
Z99 = 2.3263478740408408


class LatencyConfigError(ValueError):
    """A latency profile that cannot be used; the message says which file and which entry."""


@dataclass(frozen=True)
class Latency:
    """One operation's service time, in seconds: a log-normal given by median and p99."""

    median: float
    p99: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.median) and math.isfinite(self.p99)):
            raise ValueError(f"latency figures must be finite: {self}")
        if self.median < 0 or self.p99 < self.median:
            raise ValueError(f"need 0 <= median <= p99: {self}")
        if self.median == 0 and self.p99 > 0:
            raise ValueError(f"a zero median needs a zero p99: {self}")

    @property
    def sigma(self) -> float:
        """The log-normal's shape: 0 when median == p99 (a fixed latency)."""
        return math.log(self.p99 / self.median) / Z99 if self.median > 0 else 0.0


def _ms(median: float, p99: float) -> Latency:
    return Latency(median / 1000, p99 / 1000)


@dataclass(frozen=True)
class Model:
    """Latency figures per operation, a default for the rest, and a transfer rate.

    ``bytes_per_second`` None means no transfer term (the ``none`` profile).
    """

    name: str
    operations: Mapping[str, Latency] = field(default_factory=dict)
    default: Latency = Latency(0.0, 0.0)
    bytes_per_second: float | None = None


#: Adds nothing: the proxy forwards as fast as it can.
NONE = Model("none")

#: In-region AWS, client and service in the same region, keep-alive connections (no TLS
#: handshake per request). Medians and p99s in ms; where each comes from, and which are
#: estimates, is in bench/LATENCY.md. Keep the two in step.
AWS = Model(
    "aws",
    {
        "sqs:SendMessage": _ms(10, 50),
        "sqs:SendMessageBatch": _ms(15, 75),
        "sqs:ReceiveMessage": _ms(10, 50),
        "sqs:DeleteMessage": _ms(10, 50),
        "sqs:DeleteMessageBatch": _ms(15, 75),
        "sqs:ChangeMessageVisibility": _ms(10, 50),
        "sqs:ChangeMessageVisibilityBatch": _ms(15, 75),
        "sqs:GetQueueAttributes": _ms(10, 50),
        "sqs:GetQueueUrl": _ms(10, 50),
        "sns:Publish": _ms(20, 100),
        "sns:PublishBatch": _ms(25, 125),
        "s3:PUT": _ms(30, 150),
        "s3:GET": _ms(10, 50),
        "s3:HEAD": _ms(10, 50),
        "s3:DELETE": _ms(20, 100),
        "s3:POST": _ms(30, 150),
        "s3:LIST": _ms(25, 125),
    },
    default=_ms(20, 100),
    bytes_per_second=90e6,
)

PROFILES: Mapping[str, Model] = {"none": NONE, "aws": AWS}


def profile(name: str) -> Model:
    """The named profile (``none`` or ``aws``)."""
    try:
        return PROFILES[name]
    except KeyError:
        raise LatencyConfigError(
            f"unknown latency profile {name!r}; known: {', '.join(PROFILES)}"
        ) from None


def latency_of(model: Model, operation: str) -> Latency:
    """The figures for ``operation``, else the model's default."""
    return model.operations.get(operation, model.default)


def transfer(model: Model, nbytes: int) -> float:
    """Seconds to move ``nbytes`` over one connection (0 without a transfer rate)."""
    if not model.bytes_per_second or nbytes <= 0:
        return 0.0
    return nbytes / model.bytes_per_second


def service_time(model: Model, operation: str, rng: random.Random) -> float:
    """One draw of the operation's service time (seconds), without the transfer term."""
    latency = latency_of(model, operation)
    if latency.median == 0 or latency.sigma == 0:
        return latency.median  # exactly: a fixed model gives exactly its figure
    return rng.lognormvariate(math.log(latency.median), latency.sigma)


def draw(
    model: Model,
    operation: str,
    rng: random.Random,
    *,
    request_bytes: int = 0,
    response_bytes: int = 0,
) -> float:
    """One request's modelled latency: a service-time draw plus both bodies' transfer."""
    return service_time(model, operation, rng) + transfer(model, request_bytes + response_bytes)


def median(model: Model, operation: str, nbytes: int = 0) -> float:
    """The median modelled latency of ``operation`` moving ``nbytes`` (request + response)."""
    return latency_of(model, operation).median + transfer(model, nbytes)


def floor(operations: Iterable[str | tuple[str, int]], model: Model = AWS) -> float:
    """Sum of median latencies of requests made one after another: a critical path's floor.

    Each item is an operation name or ``(operation, bytes moved)``, e.g. ``["sqs:SendMessage",
    "sqs:ReceiveMessage", ("s3:PUT", 12_000_000), "sqs:SendMessage", "sqs:ReceiveMessage"]``.
    The default model is :data:`AWS`, since the point is what AWS would cost at least.

    The sum is exact for requests made one after another, each starting when the previous
    one answered. A hand-off to a long poll that is already waiting costs less: the proxy
    applies half of each latency before forwarding and half after, so a message sent to a
    waiting receiver reaches it after about half the send plus half the receive. A measured
    path can therefore come in under this sum by up to that much per hand-off.
    """
    total = 0.0
    for item in operations:
        operation, nbytes = (item, 0) if isinstance(item, str) else item
        total += median(model, operation, nbytes)
    return total


def operation_name(operation: str, path: str) -> str:
    """``operation`` as :func:`~tests.support.faultproxy.operation_of` gave it, with S3 LIST apart.

    S3's REST protocol names operations by HTTP method, so ListObjectsV2 arrives as
    ``s3:GET``; it is a bucket-level GET with ``list-type=2`` in the query (``/bucket?...``
    path-style, ``/?...`` virtual-hosted). It costs more than a GetObject of a small object
    (and is priced as a PUT), so it gets its own name, ``s3:LIST``.
    """
    if operation != "s3:GET":
        return operation
    parts = urlsplit(path)
    if parse_qs(parts.query).get("list-type") != ["2"]:
        return operation
    segments = [segment for segment in parts.path.split("/") if segment]
    return "s3:LIST" if len(segments) <= 1 else operation


def load(path: str | Path) -> Model:
    """A model from a JSON file: figures in milliseconds, over a base profile.

    ::

        {"base": "aws",                      # optional, default "aws"; "none" to start empty
         "bytes_per_second": 50000000,       # optional; null for no transfer term
         "default": {"median_ms": 20, "p99_ms": 100},          # optional
         "operations": {"s3:PUT": {"median_ms": 40, "p99_ms": 200}}}

    Operations not named keep the base's figures. Any other key, or a figure that is not a
    number with 0 <= median <= p99, is an error naming the file and the entry.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as error:
        raise LatencyConfigError(f"{path}: cannot read latency profile: {error}") from error
    except json.JSONDecodeError as error:
        raise LatencyConfigError(f"{path}: not JSON: {error}") from error
    if not isinstance(data, dict):
        raise LatencyConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    unknown = set(data) - {"base", "name", "bytes_per_second", "default", "operations"}
    if unknown:
        raise LatencyConfigError(f"{path}: unknown keys {sorted(unknown)}")
    base_name = data.get("base", "aws")
    if not isinstance(base_name, str):
        raise LatencyConfigError(f"{path}: base: expected a profile name, got {base_name!r}")
    try:
        base = profile(base_name)
    except LatencyConfigError as error:
        raise LatencyConfigError(f"{path}: base: {error}") from None
    operations = dict(base.operations)
    entries = data.get("operations", {})
    if not isinstance(entries, dict):
        raise LatencyConfigError(f"{path}: operations: expected an object")
    for operation, entry in entries.items():
        if ":" not in operation:
            raise LatencyConfigError(
                f"{path}: operations: {operation!r} is not service:Operation (e.g. s3:PUT)"
            )
        operations[operation] = _entry(path, f"operations.{operation}", entry)
    default = base.default
    if "default" in data:
        default = _entry(path, "default", data["default"])
    rate = data.get("bytes_per_second", base.bytes_per_second)
    if rate is not None and (
        isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0
    ):
        raise LatencyConfigError(f"{path}: bytes_per_second: expected a number > 0 or null")
    name = data.get("name", path.stem)
    return Model(str(name), operations, default, None if rate is None else float(rate))


def _entry(path: Path, where: str, entry: Any) -> Latency:
    if not isinstance(entry, dict) or set(entry) != {"median_ms", "p99_ms"}:
        raise LatencyConfigError(f"{path}: {where}: expected {{'median_ms': ..., 'p99_ms': ...}}")
    figures = (entry["median_ms"], entry["p99_ms"])
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in figures):
        raise LatencyConfigError(f"{path}: {where}: median_ms and p99_ms must be numbers")
    try:
        return _ms(*figures)
    except ValueError as error:
        raise LatencyConfigError(f"{path}: {where}: {error}") from None


def from_spec(spec: str) -> Model:
    """A profile name (``none``, ``aws``) or the path of a JSON file (:func:`load`)."""
    spec = spec.strip()
    if spec in PROFILES:
        return PROFILES[spec]
    if not Path(spec).is_file():
        raise LatencyConfigError(
            f"{ENV}={spec!r}: neither a profile ({', '.join(PROFILES)}) nor a JSON file"
        )
    return load(spec)


def from_env(environ: Mapping[str, str] | None = None) -> Model:
    """The model ``CLOUDWORKER_LATENCY`` names; :data:`NONE` when it is unset or empty."""
    spec = (os.environ if environ is None else environ).get(ENV, "")
    return from_spec(spec) if spec.strip() else NONE
