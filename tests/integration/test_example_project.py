"""The example project (examples/project/), installed from the wheel into a fresh venv.

What a user does: build the wheel (``pip wheel .``), install it with its declared
dependencies into a venv of its own, next to a project with its own ``config``
package and ``tasks.py`` (a plain Celery app configured Django-style, no
``create_app``); then run the project's own tests, whose worker (the plugin's
``cloudworker_worker``: ``celery -A tasks worker``) serves the project's app against
the session's local stack. Nothing of this repository is on that venv's path.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.provision import provision
from tests.integration.conftest import LocalStack
from tests.support.wheel import build_wheel

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "project"
#: The project's tests: 2 unit tests and 8 with a worker.
EXPECTED_PASSED = 10
#: Its own queue, so that the session's reference worker never takes its tasks.
QUEUE = "example"


def _pytest_pin() -> str:
    pins = (ROOT / "requirements-dev.txt").read_text().splitlines()
    return next(line for line in pins if line.startswith("pytest=="))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel built from this checkout, its dependencies and pytest."""
    where = tmp_path_factory.mktemp("example")
    wheel = build_wheel(where)
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         str(wheel), _pytest_pin()],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return python


def test_the_example_project_passes_its_own_tests_from_the_wheel(
    stack: LocalStack, installed: Path, tmp_path: Path
) -> None:
    settings = dataclasses.replace(stack.settings, task_queue=QUEUE)
    provision(settings, sqs=stack.client("sqs"), s3=stack.client("s3"))
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__"))
    env = {
        key: value
        for key, value in {**os.environ, **stack.env}.items()
        if key not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env["CLOUDWORKER_TASK_QUEUE"] = QUEUE
    done = subprocess.run(
        [str(installed), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(rf"{EXPECTED_PASSED} passed in [0-9.]+s( \(.*\))?", summary), summary
