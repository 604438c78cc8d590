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
    │   └── LimitExceeded       over a configured limit (integers, pixels, bytes)
    ├── PayloadError            a claim-checked payload is missing or corrupt
    └── ResponseQueueError      the client's response queue could not be used
"""

from __future__ import annotations


class CloudworkerError(Exception):
    """Base class of every error raised by cloudworker."""


class InvalidInput(CloudworkerError, ValueError):
    """The input cannot be processed; retrying would give the same answer."""


class InvalidNumbers(InvalidInput):
    """The numbers are not a non-empty list of integers."""


class InvalidImage(InvalidInput):
    """The image is empty, truncated, undecodable or of an unsupported kind."""


class LimitExceeded(InvalidInput):
    """The input is larger than a configured limit allows."""


class PayloadError(CloudworkerError):
    """A payload stored in S3 (claim-check) is missing, expired or corrupt."""


class ResponseQueueError(CloudworkerError):
    """The client's response queue could not be created or read."""
