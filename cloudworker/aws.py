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

When the user gives kombu's transport credentials of its own (keys in the
``broker_url``, keys of the task queue in ``predefined_queues``, a role to
assume in ``sts_role_arn``), :class:`Credentials` carries them, and cloudworker's
own S3, SQS and SNS clients sign with the same: one identity per app, not one
for kombu and another for the rest. An assumed role's credentials refresh
themselves before they expire (botocore's ``DeferredRefreshableCredentials``),
where kombu re-assumes the role on a clock of its own.

A transient error (:func:`is_transient`: the endpoint unreachable, a connection
reset, a timeout, a 5xx answer, throttling) may go away if the same request is
sent again later; anything else (access denied, a missing bucket, a malformed
request) will not.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from cloudworker.settings import Settings

__all__ = ["Credentials", "client", "is_transient"]

#: SQS long polls last up to 20 s; the read timeout must outlast them.
_READ_TIMEOUT = 35
_CONNECT_TIMEOUT = 5

#: The session name an assumed role's requests carry (CloudTrail shows it).
ROLE_SESSION_NAME = "cloudworker"


@dataclass(frozen=True)
class Credentials:
    """The credentials kombu's transport was given, for cloudworker's own clients too.

    All empty (the default): boto3's standard chain, as before. Keys: those.
    A role: assumed with the keys (or the standard chain), refreshed as it expires.
    The secret is kept out of ``repr`` so that no log line can show it.
    """

    access_key_id: str = ""
    secret_access_key: str = ""
    session_token: str = ""
    role_arn: str = ""
    #: DurationSeconds of each AssumeRole (kombu's ``sts_token_timeout``; AWS: 900 at least).
    role_seconds: int = 900

    def __repr__(self) -> str:
        return (
            f"Credentials(access_key_id={self.access_key_id!r}, "
            f"role_arn={self.role_arn!r}, role_seconds={self.role_seconds})"
        )

    @classmethod
    def of_broker(
        cls, broker_url: str | None, transport_options: Mapping[str, Any], queue: str
    ) -> Credentials:
        """What kombu's SQS transport signs the requests for queue ``queue`` with.

        As kombu's ``Channel.sqs()``: the keys of ``predefined_queues[queue]``, else
        those of the broker URL (``sqs://KEY:SECRET@``, quoted), else none; and
        ``sts_role_arn`` (with ``sts_token_timeout``) assumed on top.
        """
        parts = urlsplit(broker_url or "")
        access = unquote(parts.username or "")
        secret = unquote(parts.password or "")
        token = ""
        predefined = (transport_options.get("predefined_queues") or {}).get(queue) or {}
        if predefined.get("access_key_id"):
            access = str(predefined["access_key_id"])
            secret = str(predefined.get("secret_access_key", ""))
            token = str(predefined.get("session_token") or "")
        return cls(
            access_key_id=access,
            secret_access_key=secret,
            session_token=token,
            role_arn=str(transport_options.get("sts_role_arn") or ""),
            role_seconds=int(transport_options.get("sts_token_timeout") or 900),
        )

    def session(self, region: str) -> boto3.session.Session:
        """A boto3 session signing with these credentials."""
        base = boto3.session.Session(
            region_name=region,
            aws_access_key_id=self.access_key_id or None,
            aws_secret_access_key=self.secret_access_key or None,
            aws_session_token=self.session_token or None,
        )
        if not self.role_arn:
            return base
        fetcher = AssumeRoleCredentialFetcher(
            client_creator=base._session.create_client,
            source_credentials=base.get_credentials(),
            role_arn=self.role_arn,
            extra_args={
                "RoleSessionName": ROLE_SESSION_NAME,
                "DurationSeconds": self.role_seconds,
            },
        )
        assumed = botocore.session.Session()
        assumed._credentials = DeferredRefreshableCredentials(
            refresh_using=fetcher.fetch_credentials, method="assume-role"
        )
        return boto3.session.Session(botocore_session=assumed, region_name=region)


_lock = threading.Lock()
_cache: dict[tuple[str, str, str, Credentials], Any] = {}


def client(service: str, settings: Settings, credentials: Credentials | None = None) -> Any:
    """A boto3 client for ``service`` ('s3', 'sqs', ...) in the settings' region.

    It signs with ``credentials`` when given, else with boto3's standard chain.
    """
    credentials = credentials or Credentials()
    key = (service, settings.region, os.environ.get("AWS_ENDPOINT_URL", ""), credentials)
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
            found = credentials.session(settings.region).client(service, config=config)
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
