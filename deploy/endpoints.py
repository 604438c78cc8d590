"""The local AWS endpoints a local stack can run: moto (the default) and ministack.

Both are real HTTP servers speaking the SQS, S3 and SNS wire protocols (and EventBridge
Scheduler's, for ``python -m deploy schedules``), on loopback, holding everything in
memory. They are chosen with ``CLOUDWORKER_LOCAL_ENDPOINT`` (``moto`` or ``ministack``)
when a stack starts (``make up``, ``make demo``, the tests); everything after that talks to the
endpoint only through the AWS API, so readiness is probed that way too (an SQS
``ListQueues`` answered), not through an emulator's own admin route.

Why two: moto's server is one Python process whose SQS slows as a queue deepens
(measured on this machine with plain boto3: 164 messages/s drained at depth 0,
9/s at depth 500, and every other request slows with it), so a benchmark or a
large canvas on moto measures moto. ministack keeps its speed at depth (about
600 messages/s at both depths) and is an independent implementation, so a test
that passes on both does not rely on one emulator's quirks.

ministack pins an older botocore than the project's, so it lives in a virtual
environment of its own (``.venv-ministack``, made by ``make ministack`` from
``deploy/ministack-requirements.txt``); ``CLOUDWORKER_MINISTACK`` names another
``ministack`` executable.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ENDPOINTS", "ENDPOINT_VARIABLE", "Endpoint", "chosen"]

ROOT = Path(__file__).resolve().parent.parent
#: The variable that chooses the endpoint of a stack about to start.
ENDPOINT_VARIABLE = "CLOUDWORKER_LOCAL_ENDPOINT"
#: Where ``make ministack`` installs ministack, and the variable that overrides it.
MINISTACK_VENV = ROOT / ".venv-ministack"
MINISTACK_VARIABLE = "CLOUDWORKER_MINISTACK"


@dataclass(frozen=True)
class Endpoint:
    """How to start one kind of local endpoint on a given port."""

    name: str

    def command(self, port: int, environ: Mapping[str, str]) -> list[str]:
        """The command line that serves SQS, S3 and SNS on ``127.0.0.1:port``."""
        if self.name == "moto":
            # moto with its FIFO long poll made SQS's (deploy/moto_server.py).
            return [sys.executable, "-m", "deploy.moto_server", "-H", "127.0.0.1", "-p", str(port)]
        return [_ministack_executable(environ)]

    def environment(self, port: int) -> dict[str, str]:
        """Variables the server reads (ministack is configured by its environment)."""
        if self.name == "moto":
            return {}
        return {
            "GATEWAY_PORT": str(port),
            "BIND_HOST": "127.0.0.1",
            "SERVICES": "sqs,s3,sns,scheduler",  # scheduler: python -m deploy schedules
            "S3_PERSIST": "0",
            "LOG_LEVEL": "WARNING",
        }


ENDPOINTS = {name: Endpoint(name) for name in ("moto", "ministack")}


def chosen(environ: Mapping[str, str]) -> Endpoint:
    """The endpoint ``CLOUDWORKER_LOCAL_ENDPOINT`` names (moto when unset)."""
    name = environ.get(ENDPOINT_VARIABLE, "").strip() or "moto"
    try:
        return ENDPOINTS[name]
    except KeyError:
        known = ", ".join(sorted(ENDPOINTS))
        raise ValueError(f"{ENDPOINT_VARIABLE}={name!r}: expected one of {known}") from None


def _ministack_executable(environ: Mapping[str, str]) -> str:
    candidates = [environ.get(MINISTACK_VARIABLE, ""), str(MINISTACK_VENV / "bin" / "ministack")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("ministack")
    if found:
        return found
    raise RuntimeError(
        "ministack is not installed: run `make ministack` (it gets a virtual environment "
        f"of its own, {MINISTACK_VENV.name}), or set {MINISTACK_VARIABLE} to its executable"
    )
