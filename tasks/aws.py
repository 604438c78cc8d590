"""boto3 clients, built one way for every process, and which AWS errors are transient.

Endpoints and credentials come from boto3's standard chain (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, instance roles ...); only the region is passed explicitly,
because botocore reads ``AWS_DEFAULT_REGION`` but not every version reads
``AWS_REGION``. Every call has a connect and a read timeout and uses botocore's
standard retry mode, so no request can hang a process forever.

Clients are cached per process, since boto3 clients must not cross a ``fork()``
(Celery's prefork pool forks the worker after the app is imported: an
after-fork hook empties the cache in the child), and per endpoint, since a
client keeps the ``AWS_ENDPOINT_URL`` it was built with (a benchmark moves a
process from one local endpoint to the next).

A transient error (:func:`is_transient`: the endpoint unreachable, a connection
reset, a timeout, a 5xx answer, throttling) may go away if the same request is
sent again later; anything else (access denied, a missing bucket, a malformed
request) will not.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from config import Settings

__all__ = ["client", "is_transient"]

#: SQS long polls last up to 20 s; the read timeout must outlast them.
_READ_TIMEOUT = 35
_CONNECT_TIMEOUT = 5

_lock = threading.Lock()
_cache: dict[tuple[str, str, str], Any] = {}


def client(service: str, settings: Settings) -> Any:
    """A boto3 client for ``service`` ('s3', 'sqs', ...) in the settings' region."""
    key = (service, settings.region, os.environ.get("AWS_ENDPOINT_URL", ""))
    found = _cache.get(key)
    if found is not None:
        return found
    with _lock:
        found = _cache.get(key)
        if found is None:
            config = Config(
                region_name=settings.region,
                connect_timeout=_CONNECT_TIMEOUT,
                read_timeout=_READ_TIMEOUT,
                retries={"mode": "standard", "max_attempts": 5},
                max_pool_connections=20,
            )
            found = boto3.session.Session().client(service, config=config)
            _cache[key] = found
    return found


def _forget_clients() -> None:
    """In a forked child: the parent's clients (and their connections) are not ours."""
    global _lock
    _lock = threading.Lock()
    _cache.clear()


os.register_at_fork(after_in_child=_forget_clients)


_THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "SlowDown",
        "RequestLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
    }
)

_NETWORK = (ConnectionClosedError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is an AWS error that retrying later may cure."""
    if isinstance(exc, _NETWORK):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = exc.response.get("Error", {}).get("Code", "")
        return status >= 500 or status == 429 or code in _THROTTLING
    return False
