"""Flower's password: made at deploy time, kept in SSM, read by the Flower unit at start.

CloudFormation cannot create a SecureString parameter, and a password in the
template, the user data or a unit file would be readable by anyone who can
describe the stack or the instance. So ``python -m deploy aws up`` generates it
(:func:`ensure`, once: an existing password is kept) and the Flower unit runs
``python -m deploy.aws.secret FILE`` before each start, which reads it with the
instance profile (``ssm:GetParameter`` on that one parameter) into ``FILE``, a
systemd environment file readable only by the service's user, in a runtime
directory systemd removes when the service stops. The password never goes to
a log or to standard output.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Any

__all__ = ["ensure", "fetch", "main", "write_env_file"]

#: The variable python -m deploy.flower reads the password from.
PASSWORD_VARIABLE = "CLOUDWORKER_FLOWER_PASSWORD"
#: Where an instance finds the parameter's name (stack.env, from the template).
PARAMETER_VARIABLE = "CLOUDWORKER_FLOWER_PASSWORD_PARAMETER"
#: Printable ASCII without space, quotes, backslash, ``$`` and backquote: safe
#: unquoted in a systemd environment file. Generated passwords always are.
_SAFE = re.compile(r"[!#%&(-\[\]-_a-~]{12,256}")


class UnsafePassword(ValueError):
    """The stored password has characters an environment file cannot hold unquoted."""


def ensure(ssm: Any, name: str, *, stack_name: str) -> bool:
    """Create parameter ``name`` with a new random password unless it exists.

    Returns whether it was created. Never overwrites: a password someone set or
    rotated stays as it is.
    """
    try:
        ssm.put_parameter(
            Name=name,
            Description=f"Flower's password for the cloudworker stack {stack_name}",
            Value=secrets.token_urlsafe(24),
            Type="SecureString",
            Tags=[{"Key": "cloudworker:stack", "Value": stack_name}],
        )
    except ssm.exceptions.ParameterAlreadyExists:
        return False
    return True


def fetch(ssm: Any, name: str) -> str:
    """The password stored in parameter ``name``, decrypted."""
    value: str = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
    return value


def write_env_file(path: Path, password: str) -> None:
    """Write ``CLOUDWORKER_FLOWER_PASSWORD=...`` to ``path``, mode 0600, atomically."""
    if not _SAFE.fullmatch(password):
        raise UnsafePassword(
            "the Flower password must be 12-256 printable ASCII characters without spaces, "
            "quotes, backslashes, $ or backquotes"
        )
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(f"{PASSWORD_VARIABLE}={password}\n")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    """``python -m deploy.aws.secret FILE``: the Flower unit's ExecStartPre."""
    parser = argparse.ArgumentParser(
        prog="python -m deploy.aws.secret",
        description="Write Flower's password from SSM into a systemd environment file.",
    )
    parser.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    name = os.environ.get(PARAMETER_VARIABLE, "")
    if not name:
        print(f"error: {PARAMETER_VARIABLE} is not set", file=sys.stderr)
        return 1
    from cloudworker import aws
    from cloudworker.settings import load as load_settings

    try:
        password = fetch(aws.client("ssm", load_settings()), name)
        write_env_file(args.file, password)
    except UnsafePassword as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - one line for the journal, no traceback
        print(f"error: cannot read {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"Flower's password read from {name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
