"""boto3 clients, built one way for every process.

Endpoints and credentials come from boto3's standard chain (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, instance roles ...); only the region is passed explicitly,
because botocore reads ``AWS_DEFAULT_REGION`` but not every version reads
``AWS_REGION``. Every call has a connect and a read timeout and uses botocore's
standard retry mode, so no request can hang a process forever.

Clients are cached per process id, since boto3 clients must not cross a
``fork()`` (Celery's prefork pool forks the worker after the app is imported),
and per endpoint, since a client keeps the ``AWS_ENDPOINT_URL`` it was built with
(a benchmark moves a process from one local endpoint to the next).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import boto3
from botocore.config import Config

from config import Settings

__all__ = ["client"]

#: SQS long polls last up to 20 s; the read timeout must outlast them.
_READ_TIMEOUT = 35
_CONNECT_TIMEOUT = 5

_lock = threading.Lock()
_cache: dict[tuple[int, str, str, str], Any] = {}


def client(service: str, settings: Settings) -> Any:
    """A boto3 client for ``service`` ('s3', 'sqs', ...) in the settings' region."""
    key = (os.getpid(), service, settings.region, os.environ.get("AWS_ENDPOINT_URL", ""))
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
