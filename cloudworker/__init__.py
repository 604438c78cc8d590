"""cloudworker: Celery on Amazon SQS, with results and large payloads in Amazon S3.

A library a Celery app is built on, in Celery's own terms::

    import cloudworker                    # registers the cloudworker:// scheme
    from celery import Celery

    app = Celery("proj", broker="cloudworker://", backend="cloudworker://")
    # cloudworker's settings: app.conf.cloudworker_bucket = ..., else CLOUDWORKER_BUCKET

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    add.delay(2, 3).get(timeout=60)   # pushed back on this process's response queue

``cloudworker.create_app()`` makes such an app ready-made (settings from the
environment, or ``create_app(Settings(...))``).

Everything public is named here; every other module is internal. The pieces:
``sqs/`` the kombu transport, ``results/`` the result backend and response
queues, ``worker/`` the worker's Celery components, and beside them the codec
and claim-check, S3 key layout, AWS clients, settings and the error tree::

    CloudworkerError                 (cloudworker.errors: the whole tree is drawn there)
    ├── InvalidInput                 the caller's input cannot be processed
    ├── InvalidMessage               a message no worker may run
    ├── LimitExceeded, PayloadError  sizes and claim-checked payloads
    └── QueueNotProvisioned, ...     AWS resources

The reference app (``compute_stats``, ``grayscale_image``, the S3 inbox) lives
in this repository's ``tasks/``, written on this library as a user writes theirs.
"""

from __future__ import annotations

from typing import Any

from cloudworker.errors import (
    BatchSendError,
    CloudworkerError,
    InvalidArguments,
    InvalidImage,
    InvalidInput,
    InvalidMessage,
    InvalidNumbers,
    LimitExceeded,
    PayloadError,
    QueueGone,
    QueueNotProvisioned,
    ResponseQueueError,
)
from cloudworker.settings import Settings, SettingsError

__all__ = [
    "BatchSendError",
    "CloudworkerApp",
    "CloudworkerCelery",
    "CloudworkerError",
    "InvalidArguments",
    "InvalidImage",
    "InvalidInput",
    "InvalidMessage",
    "InvalidNumbers",
    "LimitExceeded",
    "ObjectStore",
    "PayloadError",
    "PayloadRef",
    "QueueGone",
    "QueueNotProvisioned",
    "ResponseQueueError",
    "Settings",
    "SettingsError",
    "adopt",
    "batch_sends",
    "create_app",
    "inbox_span",
]


#: The scheme of ``broker_url`` and ``result_backend`` that names cloudworker, and what
#: it stands for, for kombu and for Celery (pyproject.toml's entry point names BACKEND).
SCHEME = "cloudworker"
TRANSPORT = "cloudworker.sqs:Transport"
BACKEND = "cloudworker.results.backend:CloudworkerBackend"


def _register_scheme() -> None:
    """``cloudworker://`` for kombu (the transport) and for Celery (the result backend).

    An app whose configuration names it is adopted as soon as its configuration
    is read: every app made from now on gets cloudworker's fix-up, Celery's own
    hook for frameworks (its Django support is one), which watches for that
    (:func:`cloudworker.application.fixup`). An app made before this import is
    adopted when it is finalized, or when its transport or backend is made.
    """
    from celery._state import connect_on_app_finalize
    from celery.app.backends import BACKEND_ALIASES
    from celery.app.base import BUILTIN_FIXUPS
    from kombu.transport import TRANSPORT_ALIASES

    TRANSPORT_ALIASES.setdefault(SCHEME, TRANSPORT)
    BACKEND_ALIASES.setdefault(SCHEME, BACKEND)
    BUILTIN_FIXUPS.add("cloudworker.application:fixup")
    connect_on_app_finalize(_adopt_if_configured)


def _adopt_if_configured(app: Any) -> None:
    from cloudworker.application import adopt_if_configured

    adopt_if_configured(app)


_register_scheme()


def __getattr__(name: str) -> Any:
    # Celery is imported on first use, not at import: importing the errors or the
    # settings (a client's error handling, a deploy script) builds nothing.
    if name == "create_app":
        from cloudworker.application import create_app

        return create_app
    if name in ("CloudworkerCelery", "CloudworkerApp", "adopt"):
        from cloudworker import application

        return getattr(application, name)
    if name == "PayloadRef":  # a claim-checked value, as an argument check may see it
        from cloudworker.codec import PayloadRef

        return PayloadRef
    if name == "ObjectStore":
        from cloudworker.objectstore import ObjectStore

        return ObjectStore
    if name == "inbox_span":  # the trace of work that arrives as an object in S3
        from cloudworker.tracing import inbox_span

        return inbox_span
    if name == "batch_sends":
        from cloudworker.sqs.batch_sends import batch_sends

        return batch_sends
    raise AttributeError(f"module 'cloudworker' has no attribute {name!r}")
