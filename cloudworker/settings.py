"""Settings for every cloudworker process, read in one place.

Only cloudworker's own knobs live here. Each is a Celery setting,
``cloudworker_<name>`` in ``app.conf`` (so Django's ``namespace="CELERY"`` reads
``CELERY_CLOUDWORKER_<NAME>``), and an environment variable, ``CLOUDWORKER_<NAME>``,
the fallback when ``app.conf`` does not set it (:meth:`Settings.from_conf`). AWS
endpoints and credentials are deliberately absent: boto3 finds them through its
standard chain (``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``,
profiles, instance roles), so the same code runs on EC2 with a role and locally
with fake keys, and no credential ever passes through this module.

This package imports nothing of the project, so any part may depend on it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["CONF_PREFIX", "Settings", "SettingsError", "dead_letter_name", "load"]

PREFIX = "CLOUDWORKER_"
#: The prefix of cloudworker's settings in a Celery app's configuration.
CONF_PREFIX = "cloudworker_"


class SettingsError(ValueError):
    """An environment variable holds a value the setting cannot take."""


@dataclass(frozen=True)
class Settings:
    """Every setting, with its default. ``Settings.from_env()`` fills it in."""

    #: AWS region; falls back to ``AWS_REGION`` / ``AWS_DEFAULT_REGION``.
    region: str = "us-east-1"
    #: Prefix of every SQS queue (and SNS topic) the project creates.
    queue_prefix: str = "cloudworker-"
    #: Name of the task queue, without the prefix.
    task_queue: str = "tasks"
    #: The S3 bucket for results and large payloads.
    bucket: str = "cloudworker"
    #: Base prefix of every S3 key cloudworker reads or writes (``team-a/``: results
    #: under ``team-a/results/``...), so that deployments can share a bucket. Empty: the root.
    s3_prefix: str = ""
    #: A KMS key (id, ARN or alias) that encrypts what cloudworker writes to S3 (SSE-KMS)
    #: and every queue it creates (task, dead-letter, response, receiver queues). Empty:
    #: the bucket's default encryption and SQS's own (SSE-SQS).
    kms_key: str = ""
    #: A queue the app routes to or consumes that does not exist is created on first use,
    #: with its dead-letter queue; off: it must be provisioned (no ``sqs:CreateQueue``).
    create_queues: bool = True
    #: Seconds a received task stays invisible to other workers.
    visibility_timeout: int = 300
    #: Long-poll wait of every SQS receive, in seconds (1-20).
    wait_seconds: int = 20
    #: Tasks each worker process reserves ahead (x concurrency = messages per receive, <= 10).
    prefetch_multiplier: int = 5
    #: Most integers one ``compute_stats`` call accepts.
    max_integers: int = 20_000_000
    #: Most pixels (width x height, all frames) one image may have.
    max_pixels: int = 100_000_000
    #: Largest payload (an argument or a result), in bytes.
    max_payload_bytes: int = 256 * 1024 * 1024
    #: Payloads whose JSON is larger than this go through S3 (claim-check).
    inline_max_bytes: int = 192 * 1024
    #: Days a result (``results/``) is kept in S3 before the lifecycle rule expires it.
    result_expiry_days: int = 7
    #: Seconds after which an idle response queue counts as abandoned and is reaped.
    response_queue_max_age: int = 3600
    #: Default seconds a client waits for a result.
    timeout: float = 300.0
    #: Delete a claim-checked argument once the task that consumed it has ended.
    delete_consumed_payloads: bool = True
    #: Whether workers process images dropped under ``inbox_prefix``.
    inbox_enabled: bool = True
    #: S3 prefix watched for new images.
    inbox_prefix: str = "inbox/"
    #: Largest inbox object processed, in bytes; a larger one is refused unread.
    inbox_max_bytes: int = 100 * 1024 * 1024
    #: S3 prefix the grey images (and ``.error.json`` reports) are written to.
    outbox_prefix: str = "outbox/"
    #: Name (without the prefix) of the queue receiving the bucket's inbox events.
    inbox_queue: str = "inbox-events"
    #: Workers answer remote control (``celery inspect``/``control``, Flower) over SNS.
    remote_control: bool = True
    #: Workers send task events (received, started, succeeded...) over SNS, for Flower.
    events: bool = True
    #: Clients send a task-sent event per task (with ``events``): Flower's "sent", the
    #: exporter's celery_task_sent_total and oldest waiting task. One more SNS publish per task.
    sent_events: bool = False
    #: A pool process stores a successful task's result (and acknowledges the task once
    #: it is stored) from a thread, taking its next task meanwhile (results/finishing.py).
    background_results: bool = True
    #: Seconds a running task's state (STARTED, RETRY, update_state's) waits before it
    #: is written to S3 and pushed; later states within it replace it (latest wins).
    state_interval: float = 1.0
    #: Seconds between a worker's event heartbeats (Flower marks it offline after 2x).
    event_heartbeat: float = 30.0
    #: Instrument Celery with OpenTelemetry when opentelemetry-instrumentation-celery is installed.
    tracing: bool = True
    #: Seconds a celery beat process's leadership lasts unless renewed (cloudworker/beat.py):
    #: after its leader stops, another beat process takes over within about this long.
    beat_lease: float = 30.0
    #: Seconds a stopping worker (SIGTERM) lets running tasks finish before it hands
    #: them back; within systemd's TimeoutStopSec (600 s, deploy/systemd/).
    shutdown_grace: float = 540.0

    @property
    def task_queue_name(self) -> str:
        """The SQS name of the task queue."""
        return f"{self.queue_prefix}{self.task_queue}"

    @property
    def dead_letter_queue_name(self) -> str:
        """The SQS name of the task queue's dead-letter queue."""
        return dead_letter_name(self.task_queue_name)

    @property
    def inbox_queue_name(self) -> str:
        """The SQS name of the queue receiving the bucket's inbox events."""
        return f"{self.queue_prefix}{self.inbox_queue}"

    @property
    def response_queue_prefix(self) -> str:
        """Every client's response queue name starts with this."""
        return f"{self.queue_prefix}resp-"

    @property
    def receiver_queue_prefix(self) -> str:
        """Queues that exist only for a receiver (Flower, ``celery events``, control replies)."""
        return f"{self.queue_prefix}rx-"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default: ``os.environ``)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = env.get(PREFIX + field.name.upper())
            if raw is None and field.name == "region":
                raw = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
            if raw is None or raw == "":
                continue
            values[field.name] = _coerce(field.name, raw, type(field.default))
        settings = cls(**values)
        settings._check()
        return settings

    @classmethod
    def from_conf(
        cls, conf: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Read the settings from a Celery app's ``conf``, then from the environment.

        ``cloudworker_bucket`` in ``conf`` wins over ``CLOUDWORKER_BUCKET``; a
        value in ``conf`` may be of the setting's type or a string read as the
        environment's is.
        """
        env = dict(os.environ if environ is None else environ)
        for field in fields(cls):
            value = conf.get(CONF_PREFIX + field.name)
            if value is not None:
                env[PREFIX + field.name.upper()] = _as_text(field.name, value, type(field.default))
        return cls.from_env(env)

    def _check(self) -> None:
        if not 1 <= self.wait_seconds <= 20:
            raise SettingsError(f"{PREFIX}WAIT_SECONDS must be 1 to 20, not {self.wait_seconds}")
        if not 0 <= self.visibility_timeout <= 43200:
            raise SettingsError(
                f"{PREFIX}VISIBILITY_TIMEOUT must be 0 to 43200, not {self.visibility_timeout}"
            )
        if not 0 <= self.shutdown_grace <= 43200:
            raise SettingsError(
                f"{PREFIX}SHUTDOWN_GRACE must be 0 to 43200 seconds, not {self.shutdown_grace}"
            )
        if not 0 <= self.state_interval <= 3600:
            raise SettingsError(
                f"{PREFIX}STATE_INTERVAL must be 0 to 3600 seconds, not {self.state_interval}"
            )
        if self.s3_prefix and (not self.s3_prefix.endswith("/") or self.s3_prefix.startswith("/")):
            raise SettingsError(
                f"{PREFIX}S3_PREFIX must be empty or end with '/' (and not start with one), "
                f"not {self.s3_prefix!r}"
            )
        if not 3 <= self.beat_lease <= 3600:
            raise SettingsError(f"{PREFIX}BEAT_LEASE must be 3 to 3600 seconds")
        if self.event_heartbeat < 1:
            raise SettingsError(f"{PREFIX}EVENT_HEARTBEAT must be at least 1 second")
        for name in (
            "max_integers",
            "max_pixels",
            "max_payload_bytes",
            "inline_max_bytes",
            "inbox_max_bytes",
        ):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{PREFIX}{name.upper()} must be positive")


def _as_text(name: str, value: Any, kind: type) -> str:
    """A value from ``app.conf`` as the environment would hold it (checked by ``_coerce``)."""
    if isinstance(value, str):
        return value
    fits = isinstance(value, kind) or (kind is float and isinstance(value, int))
    if not fits or (isinstance(value, bool) and kind is not bool):
        raise SettingsError(f"{CONF_PREFIX}{name}={value!r} is not a {kind.__name__}")
    return str(value).lower() if kind is bool else str(value)


def _coerce(name: str, raw: str, kind: type) -> Any:
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{PREFIX}{name.upper()}={raw!r} is not true or false")
    try:
        if kind is int:
            return int(raw.replace("_", ""))
        if kind is float:
            return float(raw)
    except ValueError:
        raise SettingsError(f"{PREFIX}{name.upper()}={raw!r} is not a {kind.__name__}") from None
    return raw


def dead_letter_name(name: str) -> str:
    """The dead-letter queue of task queue ``name``: ``<name>-dlq``, or ``<base>-dlq.fifo``."""
    if name.endswith(".fifo"):
        return f"{name.removesuffix('.fifo')}-dlq.fifo"
    return f"{name}-dlq"


def load() -> Settings:
    """The settings of this process, from ``os.environ``."""
    return Settings.from_env()
