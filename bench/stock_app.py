"""The baseline: stock Celery 5.7 on SQS with the S3 result backend, as a user would set it up.

This is the configuration Celery's and kombu's documentation give for SQS
(kombu's own SQS transport, ``sqs://`` with the endpoint taken from ``AWS_ENDPOINT_URL``,
long polling, results polled from S3), with the same pool as cloudworker's worker
(acks late, ``-c 2 -P prefork``) and Celery's default prefetch (4 per process), so that
the transport, codec and result path are what differ. Nothing of cloudworker is imported
except the pure ``tasks.compute.stats`` function:
``tasks/__init__.py`` builds cloudworker's app lazily, so that import does not install
cloudworker's JSON codec; :func:`json_encoder_name` lets both the client and the worker
prove it (the worker logs it at start, see :func:`_log_encoder`).

Worker: ``python -m celery -A bench.stock_app worker -c 2 -P prefork -l WARNING``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_ready
from kombu import serialization

from tasks.compute.stats import compute_stats as _compute_stats

__all__ = ["QUEUE_NAME", "READY_MARK", "app", "compute_stats", "json_encoder_name"]

log = logging.getLogger(__name__)

#: The SQS queue name prefix; each worker configuration of a benchmark run gets its own
#: (``BENCH_STOCK_QUEUE_PREFIX``, see :mod:`bench.stack`).
QUEUE_PREFIX = os.environ.get("BENCH_STOCK_QUEUE_PREFIX", "stock-")
#: The SQS queue kombu creates for the default ``celery`` queue with our prefix.
QUEUE_NAME = f"{QUEUE_PREFIX}celery"
#: Logged at WARNING (the worker's log level) once the worker consumes.
READY_MARK = "bench: stock worker ready"
#: The S3 prefix of stock results, apart from cloudworker's ``results/``.
S3_BASE_PATH = "stock/"


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise RuntimeError(f"{name} is not set: run the stock app with the local stack's env")
    return value


def _region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


app = Celery("bench_stock")
app.conf.update(
    # The endpoint comes from AWS_ENDPOINT_URL through botocore (notes, section 1).
    broker_url="sqs://",
    broker_transport_options={
        "region": _region(),
        "wait_time_seconds": 10,
        "polling_interval": 0,
        "visibility_timeout": 300,
        "queue_name_prefix": QUEUE_PREFIX,
    },
    broker_connection_retry_on_startup=True,
    result_backend="s3://",
    s3_bucket=_env("CLOUDWORKER_BUCKET", "cloudworker-local"),
    s3_base_path=S3_BASE_PATH,
    s3_endpoint_url=os.environ.get("AWS_ENDPOINT_URL"),
    s3_region=_region(),
    s3_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID"),
    s3_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    # Celery's default prefetch (4 per pool process): what a user gets without tuning.
    worker_prefetch_multiplier=4,
)


@app.task(name="bench.stock_app.compute_stats")  # type: ignore[untyped-decorator]
def compute_stats(numbers: list[int]) -> dict[str, Any]:
    """The same pure computation cloudworker's task runs, so only the plumbing differs."""
    return _compute_stats(numbers)


def json_encoder_name() -> str:
    """The dotted name of the function kombu's ``json`` serializer uses in this process.

    ``kombu.utils.json.dumps`` means stock kombu; cloudworker's codec would show up as
    ``cloudworker.codec.Codec.dumps``.
    """
    encoder = serialization.registry._encoders["json"].encoder
    return f"{encoder.__module__}.{encoder.__qualname__}"


@worker_init.connect  # type: ignore[untyped-decorator]
def _log_encoder(**_: Any) -> None:
    """Record in the worker log which JSON encoder the worker's main process uses."""
    log.warning("bench: stock worker main process json encoder: %s", json_encoder_name())


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _log_child_encoder(**_: Any) -> None:
    """Record it for each pool child too: they run the task and encode the result."""
    log.warning("bench: stock pool child json encoder: %s", json_encoder_name())


@worker_ready.connect  # type: ignore[untyped-decorator]
def _log_ready(**_: Any) -> None:
    """Let the benchmark see when the worker consumes (INFO lines are off at WARNING)."""
    log.warning(READY_MARK)
