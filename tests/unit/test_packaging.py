"""The wheel is the library alone, whole, and installs no name a user's project has.

Built from the repository's own ``pyproject.toml`` (setuptools from
requirements-dev.txt, no download), installed into a directory of its own and
imported from there by a process that cannot see the checkout: every module of
``cloudworker`` imports, none of the repository's top-level names (``tasks``,
``config``, ``client``, ``deploy``) comes with it, and an app of a user's own,
in a project with its own ``config`` package and ``tasks`` module, is built on it.
"""

from __future__ import annotations

import ast
import email.parser
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.support.wheel import build_wheel

ROOT = Path(__file__).resolve().parents[2]
#: Names a user's project may well have (cookiecutter-django's config/, a tasks.py).
REPOSITORY_NAMES = ("tasks", "config", "client", "deploy", "bench", "tests")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--disable-pip-version-check", "--target", str(site), str(wheel)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return site


def run_outside(site: Path, cwd: Path, code: str) -> subprocess.CompletedProcess[str]:
    """``python -c code`` in ``cwd``, seeing the installed wheel and not the checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDWORKER_", "PYTHON"))}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_wheel_holds_every_module_and_data_file_and_nothing_else(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    (dist_info,) = tops - {"cloudworker"}
    assert dist_info.endswith(".dist-info")
    shipped = {name for name in names if name.startswith("cloudworker/")}
    in_repository = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "cloudworker").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert in_repository - shipped == set()
    assert {
        "cloudworker/py.typed",
        "cloudworker/sqs/__init__.py",
        "cloudworker/results/backend.py",
    } <= shipped


def test_the_wheel_declares_its_dependencies_in_ranges_and_its_extras(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
    fields = email.parser.Parser().parsestr(archive.read(metadata).decode())
    requires = fields.get_all("Requires-Dist") or []
    plain = [r for r in requires if "extra ==" not in r]
    assert {r.split(">")[0].split("[")[0].split("<")[0] for r in plain} == {
        "celery",
        "kombu",
        "boto3",
        "botocore",
        "pycurl",
    }
    assert all(">=" in r and ("<" in r or not r.startswith(("celery", "kombu"))) for r in plain)
    assert set(fields.get_all("Provides-Extra") or []) == {"tracing", "local", "flower", "demo"}


def test_installed_alone_every_module_imports_and_no_repository_name_comes_with_it(
    installed: Path, tmp_path: Path
) -> None:
    done = run_outside(
        installed,
        tmp_path,
        f"""
        import importlib, importlib.util, pkgutil
        import cloudworker
        assert cloudworker.__file__.startswith({str(installed)!r}), cloudworker.__file__
        for found in pkgutil.walk_packages(cloudworker.__path__, "cloudworker."):
            importlib.import_module(found.name)
        for name in {REPOSITORY_NAMES!r}:
            assert importlib.util.find_spec(name) is None, name
        print("ok")
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_a_users_project_with_its_own_config_and_tasks_builds_its_app_on_it(
    installed: Path, tmp_path: Path
) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "__init__.py").write_text("DJANGO = True\n")
    (tmp_path / "tasks.py").write_text("USERS_OWN = True\n")
    done = run_outside(
        installed,
        tmp_path,
        """
        import config, tasks
        from cloudworker import Settings, create_app

        assert config.DJANGO and tasks.USERS_OWN  # the project's own, not shadowed
        app = create_app(Settings(queue_prefix="shop-", bucket="shop"))

        @app.task(name="shop.add")
        def add(x, y):
            return x + y

        assert app.tasks["shop.add"].run(2, 3) == 5
        assert app.conf.broker_url == "cloudworker://"
        print(type(app.backend).__module__)
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "cloudworker.results.backend"


def test_a_django_style_project_adopts_its_own_celery_app_by_the_scheme(
    installed: Path, tmp_path: Path
) -> None:
    """No create_app: Celery's own app, configured with namespace="CELERY" as Django
    projects do; cloudworker's settings among the project's, the project's own win."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "__init__.py").write_text("")
    (tmp_path / "config" / "settings.py").write_text(
        "CELERY_BROKER_URL = 'cloudworker://'\n"
        "CELERY_RESULT_BACKEND = 'cloudworker://'\n"
        "CELERY_TASK_ACKS_LATE = False\n"
        "CELERY_CLOUDWORKER_QUEUE_PREFIX = 'shop-'\n"
        "CELERY_CLOUDWORKER_BUCKET = 'shop'\n"
    )
    done = run_outside(
        installed,
        tmp_path,
        """
        import cloudworker
        from celery import Celery, Task
        from cloudworker.task import CloudworkerTask

        class Audited(Task):
            throws = (KeyError,)

        app = Celery("shop")
        app.config_from_object("config.settings", namespace="CELERY")

        @app.task(base=Audited)
        def add(x, y):
            return x + y

        add.name  # as a module using its task does, before anything reads the settings
        assert app.conf.task_acks_late is False  # the project's own setting stands
        assert isinstance(app, cloudworker.CloudworkerApp) and isinstance(app, Celery)
        settings = app.services.settings
        assert (settings.queue_prefix, settings.bucket) == ("shop-", "shop")
        assert app.conf.broker_transport_options["queue_name_prefix"] == "shop-"
        task = app.tasks[add.name]
        assert isinstance(task, CloudworkerTask) and isinstance(task, Audited)
        assert KeyError in task.throws and task.max_retries == 3
        assert app.conf.task_default_queue == "tasks"
        print(type(app.backend).__module__, app.thread_oid.startswith("shop-resp-"))
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "cloudworker.results.backend True"


def test_the_reference_app_is_written_on_the_public_api_alone() -> None:
    """tasks/ imports ``cloudworker`` only, as a user's project does (tasks/errors.py
    re-exports the error tree under its old name, for results stored before the move)."""
    private = []
    for path in sorted((ROOT / "tasks").rglob("*.py")):
        if path.name == "errors.py" and path.parent.name == "tasks":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            private += [
                f"{path.relative_to(ROOT)}: {n}" for n in names if n.startswith("cloudworker.")
            ]
    assert private == []
