"""The release the instances install: a source archive of one commit, in the stack's bucket.

The project is not published anywhere an instance could download it from, so
``python -m deploy aws up`` takes it from the local Git checkout: ``git archive``
of the commit asked for (``HEAD`` by default), named by its commit id, uploaded
to ``releases/`` in the stack's bucket. The user data downloads it with the
instance profile (which may read ``releases/*`` and nothing else of the kind)
and installs it with its pinned requirements. Only committed files are deployed:
an uncommitted change never reaches an instance unnoticed (the command warns).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.aws.names import release_key

__all__ = ["Release", "ReleaseError", "build", "is_dirty", "upload"]

ROOT = Path(__file__).resolve().parents[2]


class ReleaseError(Exception):
    """The release cannot be built (no Git checkout, unknown revision)."""


@dataclass(frozen=True)
class Release:
    """A source archive of one commit."""

    version: str
    archive: bytes

    @property
    def key(self) -> str:
        return release_key(self.version)


def build(revision: str = "HEAD", repo: Path = ROOT) -> Release:
    """The archive of ``revision``, versioned by its 12-character commit id."""
    commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}").strip()
    version = commit[:12].decode()
    archive = _git(repo, "archive", "--format=tar.gz", "--prefix=cloudworker/", commit.decode())
    return Release(version, archive)


def is_dirty(repo: Path = ROOT) -> bool:
    """Whether the checkout has changes a release would not include."""
    return bool(_git(repo, "status", "--porcelain", "--untracked-files=no").strip())


def upload(s3: Any, bucket: str, release: Release) -> str:
    """Put the release in ``bucket``; return its key."""
    s3.put_object(
        Bucket=bucket,
        Key=release.key,
        Body=release.archive,
        ContentType="application/gzip",
        ServerSideEncryption="AES256",
    )
    return release.key


def _git(repo: Path, *args: str) -> bytes:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, check=False, timeout=120
        )
    except OSError as exc:
        raise ReleaseError(f"git is needed to build a release: {exc}") from None
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip() or f"git {args[0]} failed"
        raise ReleaseError(f"cannot build a release from {repo}: {reason}")
    return done.stdout
