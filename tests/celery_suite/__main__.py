"""``python -m tests.celery_suite [PYTEST ARGS]``: Celery's integration tests against cloudworker.

Fetches the pinned Celery source distribution once (with pip, checked against its
SHA-256) into ``.cache/celery-<version>/``, keeps only ``t/`` from it (the
integration tests and the two modules they import from ``t/``), then runs pytest on
:data:`FILES` there with tests/celery_suite/pytest.ini, whose plugin starts the
local stack. Nothing of Celery's is copied into the repository. Extra arguments go
to pytest (``-k test_chord``, ``-x``, ``--lf``...).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

#: The version requirements.txt pins (celery[sqs]==5.7.0).
CELERY_VERSION = "5.7.0"
#: sha256 of celery-5.7.0.tar.gz as published on PyPI.
SDIST_SHA256 = "6a5dfcf6662287204f009a02002b9e66c83d4105e47ebabdc7079108772fc6f0"
#: The modules the issue asks for, in t/integration/.
FILES = (
    "test_tasks.py",
    "test_canvas.py",
    "test_inspect.py",
    "test_backend.py",
    "test_serialization.py",
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = ROOT / ".cache" / f"celery-{CELERY_VERSION}"
#: What is kept of the sdist: t/integration and what it imports from t/.
KEPT = ("t/__init__.py", "t/canvas_helpers.py", "t/integration/")


def fetch(cache: Path = CACHE) -> Path:
    """The extracted ``t/`` of the pinned sdist, downloaded on first use."""
    stamp = cache / ".sdist-sha256"
    if stamp.is_file() and stamp.read_text().strip() == SDIST_SHA256:
        return cache
    with tempfile.TemporaryDirectory() as download:
        subprocess.run(
            [
                sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                "--no-deps", "--no-binary", ":all:", f"celery=={CELERY_VERSION}", "-d", download,
            ],
            check=True,
        )  # fmt: skip
        sdist = Path(download) / f"celery-{CELERY_VERSION}.tar.gz"
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        if digest != SDIST_SHA256:
            raise SystemExit(f"{sdist.name}: sha256 {digest}, expected {SDIST_SHA256}")
        staging = cache.with_name(cache.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        prefix = f"celery-{CELERY_VERSION}/"
        with tarfile.open(sdist) as archive:
            members = []
            for member in archive.getmembers():
                relative = member.name.removeprefix(prefix)
                if member.name.startswith(prefix) and relative.startswith(KEPT):
                    member.name = relative
                    members.append(member)
            # filter="data": no links out, no devices (Python >= 3.11.4).
            archive.extractall(staging, members=members, filter="data")
        (staging / ".sdist-sha256").write_text(SDIST_SHA256 + "\n")
        shutil.rmtree(cache, ignore_errors=True)
        staging.rename(cache)
    return cache


def main(argv: list[str]) -> int:
    cache = fetch()
    env = {
        **os.environ,
        # tasks, config, deploy and tests.celery_suite.plugin, from this checkout.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    command = [
        sys.executable, "-m", "pytest",
        "-c", str(HERE / "pytest.ini"), "--rootdir", str(cache), "--confcutdir", str(cache),
        *(f"t/integration/{name}" for name in FILES),
        *argv,
    ]  # fmt: skip
    return subprocess.run(command, cwd=cache, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
