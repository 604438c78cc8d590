"""cloudworker's kombu transport: kombu's SQS transport with our defaults.

Selected by configuration (``broker_transport = "tasks.transport:Transport"``),
not by patching kombu. What it changes:

* Messages travel as plain JSON. kombu's SQS transport base64-encodes every
  message twice by default (the body, then the whole envelope: about x1.78);
  JSON needs neither layer, so an inline payload can be almost twice as large.
  The receive path still reads base64 messages from other producers.
* Queues are never created as a side effect of the first message: they belong
  to the provisioning step (``python -m deploy provision``). Using a queue that
  does not exist is a clear :class:`QueueNotProvisioned` error.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import SQS
from kombu.transport.SQS.exceptions import DoesNotExistQueueException

__all__ = ["Channel", "QueueNotProvisioned", "Transport"]


class QueueNotProvisioned(Exception):
    """A queue the app needs does not exist: the provisioning step has not run."""


class Channel(SQS.Channel):
    """kombu's SQS channel, with plain JSON bodies and no implicit queue creation."""

    #: No base64 layer on message bodies (kombu's virtual transport default is base64).
    body_encoding: str | None = None  # type: ignore[assignment]

    @property
    def sqs_base64_encoding(self) -> bool:
        """No base64 layer on the SQS message body either, unless configured."""
        return bool(self.transport_options.get("sqs_base64_encoding", False))

    def _new_queue(self, queue: str, **kwargs: Any) -> str:
        try:
            url: str = self._resolve_queue_url(queue)  # type: ignore[no-untyped-call]
        except DoesNotExistQueueException:
            name = self.canonical_queue_name(queue)  # type: ignore[no-untyped-call]
            raise QueueNotProvisioned(
                f"SQS queue {name!r} does not exist: run the provisioning step "
                "(`make up` locally, `python -m deploy provision` or the AWS stack)"
            ) from None
        return url


class Transport(SQS.Transport):
    """kombu's SQS transport with :class:`Channel`."""

    Channel = Channel
