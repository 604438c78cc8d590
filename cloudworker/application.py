"""How a Celery app becomes a cloudworker app: in Celery's own terms, or ready-made.

Any Celery app is adopted (:func:`adopt`) once ``import cloudworker`` has
registered the scheme and its configuration names it::

    app = Celery("proj", broker="cloudworker://", backend="cloudworker://")

It is adopted when it is finalized (its tasks are first used, or a worker
starts), or when its transport or its result backend is first made, whichever
comes first; :func:`create_app` makes one adopted at once. Adopting an app:

* reads cloudworker's settings from ``app.conf`` (``cloudworker_*``), then from
  the environment (``CLOUDWORKER_*``): :meth:`cloudworker.settings.Settings.from_conf`;
* gives every setting the user did not set cloudworker's default
  (:data:`DEFAULTS` and :func:`_defaults`); what the user set stands, except a
  serializer other than JSON, which is refused (no pickle on the wire);
* makes the app's class a subclass of its own with :class:`CloudworkerApp`
  (``reply_to``, claim-checked arguments keyed by task id), and every task's
  class one with :class:`~cloudworker.task.CloudworkerTask`, whatever its base
  (:func:`cloudworker.task.task_class`);
* adds the worker's components (visibility heartbeat, reaper, stored
  revocations, shutdown grace) and the control that stores revocations.

``celery -A tasks worker`` finds the reference app made here as ``tasks.app``.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from celery import Celery
from celery.app.base import _unpickle_app
from celery.exceptions import ImproperlyConfigured
from celery.utils import uuid
from celery.utils.dispatch import Signal
from celery.utils.saferepr import saferepr
from kombu.exceptions import EncodeError

from cloudworker import SCHEME, TRANSPORT, aws, codec, tracing
from cloudworker.keys import check_task_id, task_payload_prefix
from cloudworker.services import Services
from cloudworker.settings import Settings
from cloudworker.task import sendable, task_class, upgrade_task
from cloudworker.worker.reaper import Reaper
from cloudworker.worker.revocations import StoredRevocations
from cloudworker.worker.shutdown import ShutdownGrace
from cloudworker.worker.visibility import VisibilityHeartbeat

__all__ = ["SCHEME", "CloudworkerApp", "CloudworkerCelery", "adopt", "create_app", "uses_scheme"]

#: A key of the transport options: set once cloudworker's are among them.
ADOPTED_OPTION = "cloudworker_adopted"
#: Serializers and content types: JSON only (a message in any other is dead-lettered).
_JSON = frozenset({"json", "application/json"})

log = logging.getLogger(__name__)


class CloudworkerApp:
    """What an adopted app's class adds to the user's: where answers go, what is sent.

    Mixed in before the user's own class (``type(app)``), so that the user's app
    keeps its class's behaviour and ``isinstance`` checks; see :func:`adopt`.
    """

    services: Services
    backend: Any  # Celery's, beside this class in the adopted app's
    conf: Any

    @property
    def thread_oid(self) -> str:
        """The reply address of tasks sent from here: this process's response queue.

        Celery uses ``thread_oid`` as the default ``reply_to`` of every task it
        sends, directly (``send_task``) and through canvas (``group``, ``chain``).
        """
        reply_address = getattr(self.backend, "reply_address", None)
        if reply_address is None:  # a result backend of the user's own
            oid: str = super().thread_oid  # type: ignore[misc]
            return oid
        address: str = reply_address()
        return address

    def send_task(
        self,
        name: str,
        args: Any = None,
        kwargs: Any = None,
        *,
        task_id: Any = None,
        **options: Any,
    ) -> Any:
        """Celery's ``send_task``: large arguments go under ``payloads/<task id>/``.

        Every task Celery sends passes here (``delay``, ``apply_async``, canvas).
        Keying the payloads by task id is what lets the worker confine the
        references it resolves and deletes to its own task's; a value the codec
        refuses raises its typed error, not kombu's ``EncodeError``; the trace span
        of a publish that fails is ended (:func:`cloudworker.tracing.publishing`); and a
        task whose ``reply_to`` is another process's is not waited for here.
        """
        task_id = check_task_id(task_id) if task_id is not None else uuid()
        if "argsrepr" not in options and "kwargsrepr" not in options:
            options.update(self._reprs(args, kwargs))
        replies_to = getattr(self.backend, "replies_to", None)
        with (
            codec.payload_prefix(task_payload_prefix(task_id)),
            tracing.publishing(name, task_id),
            replies_to(options.get("reply_to")) if replies_to else contextlib.nullcontext(),
        ):
            try:
                return super().send_task(  # type: ignore[misc]
                    name, args, kwargs, task_id=task_id, **options
                )
            except EncodeError as exc:
                raise sendable(exc) from exc

    def _task_from_fun(self, fun: Any, name: Any = None, base: Any = None, **options: Any) -> Any:
        """Celery's, with the task's class made a cloudworker task's whatever its base."""
        base = task_class(base or self.Task)  # type: ignore[attr-defined]
        return super()._task_from_fun(fun, name=name, base=base, **options)  # type: ignore[misc]

    def register_task(self, task: Any, **options: Any) -> Any:
        """Celery's, for a task given as a class or an instance: made a cloudworker task."""
        if isinstance(task, type):
            task = task_class(task)
        else:
            upgrade_task(task)
        return super().register_task(task, **options)  # type: ignore[misc]

    def __reduce__(self) -> Any:
        # Pickled as the user's own class, adopted again when unpickled.
        own = next(c for c in type(self).__mro__[1:] if not issubclass(c, CloudworkerApp))
        return (_unpickle_adopted, (own, self.Pickler, *self.__reduce_args__()))  # type: ignore[attr-defined]

    def _reprs(self, args: Any, kwargs: Any) -> dict[str, str]:
        """``argsrepr``/``kwargsrepr`` as Celery makes them, except that an integer
        past the int/str conversion limit (on which Celery's fails) is shortened."""
        args, kwargs = args or (), kwargs or {}
        try:
            return self._saferepr(args, kwargs)
        except ValueError:
            return self._saferepr(codec.loggable(args), codec.loggable(kwargs))

    def _saferepr(self, args: Any, kwargs: Any) -> dict[str, str]:
        levels = self.conf.task_repr_maxlevels
        amqp = self.amqp  # type: ignore[attr-defined]
        return {
            "argsrepr": saferepr(args, amqp.argsrepr_maxsize, maxlevels=levels),
            "kwargsrepr": saferepr(kwargs, amqp.kwargsrepr_maxsize, maxlevels=levels),
        }


class CloudworkerCelery(CloudworkerApp, Celery):  # type: ignore[misc]
    """The class of the apps :func:`create_app` makes."""


def _unpickle_adopted(cls: type, pickler: Any, *args: Any) -> Any:
    return adopt(_unpickle_app(cls, pickler, *args))


def create_app(
    settings: Settings | None = None, *, services: Services | None = None
) -> CloudworkerCelery:
    """A ready cloudworker app, from ``settings`` (default: the environment).

    The same as ``Celery("cloudworker", broker="cloudworker://",
    backend="cloudworker://")`` adopted at once; settings put in ``app.conf``
    afterwards still win over cloudworker's defaults.
    """
    app = CloudworkerCelery("cloudworker", broker=f"{SCHEME}://", backend=f"{SCHEME}://")
    adopt(app, settings or Settings.from_env(), services=services)
    return app


def uses_scheme(conf: Any) -> bool:
    """Whether a Celery configuration names cloudworker as its broker."""
    url = conf.get("broker_url")
    transport = conf.get("broker_transport")
    return (isinstance(url, str) and url.startswith(f"{SCHEME}://")) or transport in (
        SCHEME,
        TRANSPORT,
    )


def adopt_if_configured(app: Celery) -> None:
    """Adopt ``app`` if its configuration names cloudworker.

    Called once its configuration is read (``on_after_configure``, see
    :func:`fixup`) and when it is finalized. An app of :class:`CloudworkerApp`'s
    is left alone: :func:`create_app` adopts its own, with its own settings.
    """
    if not isinstance(app, CloudworkerApp) and uses_scheme(app.conf):
        adopt(app)


def fixup(app: Celery) -> None:
    """Celery's fix-up hook, called for every app as it is made (after ``import cloudworker``).

    It waits for the app's configuration to be read, the first moment its
    ``broker_url`` is known and before anything is sent or any task made. The
    app's signals are made after its fix-ups, except ``on_configure`` if one
    is there already: that one is made here, and sent before the configuration
    is read, when the rest exist.
    """
    if app.on_configure is None:
        app.on_configure = Signal(name="app.on_configure")
    if isinstance(app.on_configure, Signal):
        app.on_configure.connect(_watch_configuration, sender=app, weak=False)


def _watch_configuration(sender: Celery, **_: Any) -> None:
    sender.on_after_configure.connect(_configured, sender=sender, weak=False)


def _configured(sender: Celery, **_: Any) -> None:
    adopt_if_configured(sender)


def adopt(
    app: Celery, settings: Settings | None = None, *, services: Services | None = None
) -> Any:
    """Make ``app`` a cloudworker app (once; see the module's docstring). Returns it.

    Raises :class:`~celery.exceptions.ImproperlyConfigured` for a configuration
    cloudworker cannot serve (a serializer other than JSON).
    """
    if isinstance(app, CloudworkerApp) and hasattr(app, "services"):
        return app
    settings = settings or Settings.from_conf(app.conf)
    services = services or Services(settings)
    _refuse_other_serializers(app.conf)
    if not isinstance(app, CloudworkerApp):
        app.__class__ = _adopted_class(type(app))
    app.services = services
    # app.control writes each revocation to S3 before broadcasting it (worker/revocations.py).
    app.control_cls = "cloudworker.worker.revocations:Control"
    app.__dict__.pop("control", None)  # made before adoption: made again
    # kombu's serializer registry is process-wide: the codec of the last app adopted
    # in a process serves every app of that process (bench runs one process per client).
    codec.install(services.codec)
    conf = app.conf
    for key, value in _defaults(settings).items():
        if not conf.value_set_for(key):
            conf[key] = value
    # The transport's options: the user's win over cloudworker's, key by key.
    options = {**_transport_options(settings), **(conf.broker_transport_options or {})}
    # The transport needs the names Celery gives its monitoring exchanges and queues.
    options.update(
        event_exchange=conf.event_exchange,
        event_queue_prefix=conf.event_queue_prefix,
        control_namespace=conf.control_exchange,
        **{ADOPTED_OPTION: True},
    )
    conf.broker_transport_options = options
    # cloudworker's own clients sign as kombu's transport does: the keys of the broker
    # URL or of the task queue in predefined_queues, and sts_role_arn (cloudworker/aws.py).
    # Read when the first client is made, so what a user sets in app.conf counts.
    services.credentials = lambda: aws.Credentials.of_broker(
        _first_url(app.conf.broker_url), app.conf.broker_transport_options, settings.task_queue
    )
    # Traces across client and worker, when OpenTelemetry's Celery instrumentation is installed.
    tracing.instrument(settings)
    app.steps["consumer"].add(VisibilityHeartbeat)
    for step in (Reaper, StoredRevocations, ShutdownGrace):
        app.steps["worker"].add(step)
    # Tasks made before adoption (shared_task, Celery's own, a task decorated before the
    # configuration was read: its promise calls Celery's _task_from_fun, bound before)
    # become cloudworker's too: now, and once the app's pending tasks are made.
    _upgrade_tasks(app)
    app.on_after_finalize.connect(_upgrade_tasks, sender=app, weak=False)
    log.debug("adopted Celery app %s", app.main)
    return app


def _upgrade_tasks(sender: Celery, **_: Any) -> None:
    for task in list(sender._tasks.values()):
        upgrade_task(task)


#: Celery settings cloudworker gives its own default, where the user set none
#: (README: "Differences from Celery" says why, and how to get Celery's back).
DEFAULTS: dict[str, Any] = {
    "result_backend": f"{SCHEME}://",
    "broker_connection_retry_on_startup": True,
    # A result is stored through endpoint faults: transient errors are retried with
    # exponential backoff (up to 10 s apart, for about five minutes).
    "result_backend_always_retry": True,
    "result_backend_max_retries": 30,
    "result_backend_max_sleep_between_retries_ms": 10_000,
    # JSON only, everywhere: a pickle message is refused, never deserialized.
    "task_serializer": "json",
    "result_serializer": "json",
    "event_serializer": "json",
    "accept_content": ["json"],
    "result_accept_content": ["json"],
    # At-least-once: a task is acknowledged after it ran, and re-queued if the
    # process running it dies.
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    # A running task reads STARTED: written only if it runs longer than
    # CLOUDWORKER_STATE_INTERVAL (cloudworker/results/progress.py), so short tasks pay nothing.
    "task_track_started": True,
    # Results expire by the bucket's lifecycle rule (CLOUDWORKER_RESULT_EXPIRY_DAYS),
    # not by a periodic cleanup task.
    "result_expires": None,
    "worker_consumer": "cloudworker.worker.consumer:Consumer",
    # Several beat processes at once send each tick once: a leader lease in S3.
    "beat_scheduler": "cloudworker.beat:Scheduler",
}


def _defaults(settings: Settings) -> dict[str, Any]:
    return {
        **DEFAULTS,
        # Receive several messages per request; the visibility heartbeat keeps the
        # ones waiting for a free process from expiring (cloudworker/worker/visibility.py).
        "worker_prefetch_multiplier": settings.prefetch_multiplier,
        # The queue provisioning made (CLOUDWORKER_TASK_QUEUE): queues are never
        # made as a side effect of a message.
        "task_default_queue": settings.task_queue,
        # Monitoring (Flower, celery inspect/control/events) over SNS: each event and
        # each heartbeat is one SNS publish (README: "Monitoring and its cost").
        "worker_enable_remote_control": settings.remote_control,
        "worker_send_task_events": settings.events,
        # task-sent events (Flower, celery_task_sent_total, the age of the oldest
        # waiting task in deploy/exporter.py): one more SNS publish per task, so opt-in.
        "task_send_sent_event": settings.events and settings.sent_events,
    }


def _transport_options(settings: Settings) -> dict[str, Any]:
    return {
        "region": settings.region,
        "queue_name_prefix": settings.queue_prefix,
        "wait_time_seconds": settings.wait_seconds,
        # Long polling already waits; a client-side sleep on top only adds latency.
        "polling_interval": 0,
        "visibility_timeout": settings.visibility_timeout,
        # Celery's events and remote control over SNS fanout (cloudworker/sqs/fanout.py).
        "supports_fanout": settings.remote_control or settings.events,
        "receiver_queue_prefix": settings.receiver_queue_prefix,
        "receiver_max_age": settings.response_queue_max_age,
        # Receiver queues are encrypted with the key every queue cloudworker makes gets.
        "kms_key": settings.kms_key,
        # Task queues created on first use, with their dead-letter queues (cloudworker/sqs/).
        "create_queues": settings.create_queues,
        # kombu's own boto3 client (publish, acknowledge): bounded waits, and
        # botocore's standard retries with backoff for throttling and 5xx.
        "client-config": {
            "connect_timeout": 5,
            "read_timeout": settings.wait_seconds + 15,
            "retries": {"mode": "standard", "max_attempts": 8},
        },
    }


def _refuse_other_serializers(conf: Any) -> None:
    for key in ("task_serializer", "result_serializer", "event_serializer"):
        value = conf.get(key)
        if conf.value_set_for(key) and value not in _JSON:
            raise ImproperlyConfigured(
                f"cloudworker sends JSON only: {key}={value!r} cannot be used "
                "(no pickle on the wire)"
            )
    for key in ("accept_content", "result_accept_content"):
        value = conf.get(key)
        if conf.value_set_for(key) and value is not None and set(value) - _JSON:
            raise ImproperlyConfigured(
                f"cloudworker accepts JSON only: {key}={list(value)!r} cannot be used"
            )


_ADOPTED_CLASSES: dict[type, type] = {}


def _adopted_class(cls: type) -> type:
    """``cls`` with :class:`CloudworkerApp` mixed in first (one class per class)."""
    found = _ADOPTED_CLASSES.get(cls)
    if found is None:
        found = _ADOPTED_CLASSES[cls] = type(
            cls.__name__,
            (CloudworkerApp, cls),
            {"__module__": cls.__module__, "__qualname__": cls.__qualname__},
        )
    return found


def _first_url(url: Any) -> str | None:
    """The first of a broker URL given as a list or ``;``-separated (failover)."""
    if isinstance(url, (list, tuple)):
        url = url[0] if url else None
    return url.split(";")[0] if isinstance(url, str) else None
