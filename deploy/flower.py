"""``python -m deploy.flower``: Flower for cloudworker, always behind a password.

Runs ``celery -A tasks flower`` with three differences:

* It refuses to start without ``CLOUDWORKER_FLOWER_USER`` and
  ``CLOUDWORKER_FLOWER_PASSWORD`` and passes them to Flower as HTTP basic
  authentication through the environment (``FLOWER_BASIC_AUTH``), not the
  command line, where any user of the machine could read them. It removes
  ``FLOWER_UNAUTHENTICATED_API``, so the API is never open either.
* Queue lengths work on SQS: Flower 2.2 asks its broker module, which knows
  only RabbitMQ and Redis and answers "'sqs' broker is not supported". Flower
  has no way to register another broker, so this launcher, in Flower's process
  only, points Flower's ``get_broker`` at :class:`SqsQueueLengths`, which reads
  SQS's own queue attributes.
* Every page is behind the password: Flower 2.2 serves ``/metrics`` (the names of
  tasks and workers, their counts) and ``/healthcheck`` to anyone, whatever its
  authentication; here they ask for it like the rest (:func:`_password_everywhere`).
* Flower's periodic ``enable_events`` broadcast (every 5 s, an SNS publish and
  a message to every worker) is off: cloudworker workers send events from the
  start when ``CLOUDWORKER_EVENTS`` is on, and it is on by default.

    python -m deploy.flower [--address 127.0.0.1] [--port 5555]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

__all__ = ["SqsQueueLengths", "flower_command", "main"]

USER_VARIABLE = "CLOUDWORKER_FLOWER_USER"
PASSWORD_VARIABLE = "CLOUDWORKER_FLOWER_PASSWORD"

#: SQS attributes read for a queue's length.
_ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


class SqsQueueLengths:
    """Flower's broker interface (``await queues(names)``) answered from SQS attributes."""

    def __init__(self, app: Any) -> None:
        self._app = app

    async def queues(self, names: list[str]) -> list[dict[str, Any]]:
        """One entry per queue: messages in all, ready, in flight (unacknowledged)."""
        return await asyncio.to_thread(self._lengths, list(names))

    def _lengths(self, names: list[str]) -> list[dict[str, Any]]:
        found = []
        with self._app.connection_for_read() as connection:
            channel = connection.default_channel
            for name in names:
                try:
                    url = channel._new_queue(name)
                    attributes = channel.sqs().get_queue_attributes(
                        QueueUrl=url, AttributeNames=_ATTRIBUTES
                    )["Attributes"]
                except Exception:  # noqa: BLE001 - a queue that is gone has no length
                    continue
                ready, in_flight, delayed = (int(attributes.get(a, 0)) for a in _ATTRIBUTES)
                found.append(
                    {
                        "name": name,
                        "messages": ready + in_flight + delayed,
                        "messages_ready": ready,
                        "messages_unacknowledged": in_flight,
                    }
                )
        return found


def flower_command(address: str, port: int) -> list[str]:
    """The command line that starts Flower (the credentials come from the environment)."""
    return [sys.executable, "-m", "deploy.flower", f"--address={address}", f"--port={port}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.flower", description=__doc__)
    parser.add_argument("--address", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=5555)
    args = parser.parse_args(argv)

    user = os.environ.get(USER_VARIABLE, "")
    password = os.environ.get(PASSWORD_VARIABLE, "")
    if not user or not password:
        print(
            f"error: Flower is only served with a password: set {USER_VARIABLE} and "
            f"{PASSWORD_VARIABLE}",
            file=sys.stderr,
        )
        return 2
    if ":" in user or "," in user + password:
        print(f"error: {USER_VARIABLE} may not contain ':' or ','; neither may the password",
              file=sys.stderr)  # fmt: skip
        return 2
    os.environ["FLOWER_BASIC_AUTH"] = f"{user}:{password}"
    os.environ.pop("FLOWER_UNAUTHENTICATED_API", None)
    _serve_sqs_queue_lengths()
    _password_everywhere()

    from celery.bin.celery import celery

    celery.main(
        args=[
            "-A", "tasks", "flower",
            f"--address={args.address}", f"--port={args.port}", "--enable_events=False",
        ],
        prog_name="celery",
    )  # fmt: skip
    return 0


def _password_everywhere() -> None:
    """Flower's handlers that skip its authentication check (``/metrics``, ``/healthcheck``)
    get it: with basic auth, a request without the password is answered 401."""
    from flower.views import monitor
    from tornado.web import authenticated

    for handler in (monitor.Metrics, monitor.Healthcheck):
        if not getattr(handler.get, "__wrapped__", None):
            handler.get = authenticated(handler.get)


def _serve_sqs_queue_lengths() -> None:
    from flower.views import BaseHandler

    original = BaseHandler.get_broker

    def get_broker(handler: Any) -> Any:
        if handler.application.transport == "sqs":
            return SqsQueueLengths(handler.capp)
        return original(handler)

    BaseHandler.get_broker = get_broker


if __name__ == "__main__":
    sys.exit(main())
