"""The exceptions cloudworker raises, in one hierarchy.

Every error a caller may need to tell apart has its own class here, so that the
worker's reason crosses the wire as a *type* plus a message (Celery's JSON
exception encoding stores ``exc_module`` and ``exc_type``) and is raised again on
the client as the same class. Each class takes a single message argument so
that it can be rebuilt from its ``args``.

    CloudworkerError
    ├── InvalidInput            the caller's input cannot be processed (never retried)
    │   ├── InvalidNumbers      not a list of integers / not integer text
    │   ├── InvalidImage        empty, truncated, undecodable or unsupported image
    │   ├── InvalidArguments    arguments that do not fit the task (count, names, types)
    │   ├── InvalidMessage      a task message that cannot run as sent (also dead-lettered)
    │   └── LimitExceeded       over a limit (integers, pixels, bytes, JSON nesting depth)
    ├── PayloadError            a claim-checked payload is missing, corrupt or not the task's
    ├── ResponseQueueError      the client's response queue could not be used
    ├── QueueNotProvisioned     a queue the app needs does not exist: provisioning has not run
    ├── QueueGone               a queue was deleted (reaped) or never created
    └── BatchSendError          SQS refused some messages of a batch send

A ``ValueError`` from :mod:`cloudworker.settings` (``SettingsError``) stands apart:
the settings module imports nothing else of the library.
"""

from __future__ import annotations

__all__ = [
    "BatchSendError",
    "CloudworkerError",
    "InvalidArguments",
    "InvalidImage",
    "InvalidInput",
    "InvalidMessage",
    "InvalidNumbers",
    "LimitExceeded",
    "PayloadError",
    "QueueGone",
    "QueueNotProvisioned",
    "ResponseQueueError",
]


class CloudworkerError(Exception):
    """Base class of every error raised by cloudworker."""


class InvalidInput(CloudworkerError, ValueError):
    """The input cannot be processed; retrying would give the same answer."""


class InvalidNumbers(InvalidInput):
    """The numbers are not a non-empty list of integers."""


class InvalidImage(InvalidInput):
    """The image is empty, truncated, undecodable or of an unsupported kind."""


class InvalidArguments(InvalidInput, TypeError):
    """The arguments do not fit the task: their number, names or types.

    Also a ``TypeError``, which is what Celery raises for arguments that do not
    fit a task's signature.
    """


class InvalidMessage(InvalidInput):
    """A task message is malformed (its headers, its id, its body's shape).

    The worker moves such a message to the dead-letter queue with this reason and,
    when the message names a task id and a response queue, answers the caller with
    this error at once.
    """


class LimitExceeded(InvalidInput):
    """The input is larger than a configured limit allows."""


class PayloadError(CloudworkerError):
    """A payload stored in S3 (claim-check) is missing, expired or corrupt."""


class ResponseQueueError(CloudworkerError):
    """The client's response queue could not be created or read."""


class QueueNotProvisioned(CloudworkerError):
    """A queue the app needs does not exist: the provisioning step has not run."""


class QueueGone(CloudworkerError):
    """The queue does not exist (never created, deleted or reaped)."""


class BatchSendError(CloudworkerError):
    """Some messages of a batch were refused by SQS."""
