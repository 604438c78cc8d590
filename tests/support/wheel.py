"""The wheel of this checkout, built from a copy of its sources (the checkout stays clean)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def build_wheel(where: Path) -> Path:
    """Build cloudworker's wheel (``pip wheel .``) under ``where``; return its path."""
    source = where / "source"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(
        ROOT / "cloudworker", source / "cloudworker", ignore=shutil.ignore_patterns("__pycache__")
    )
    out = where / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-w", str(out), str(source)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (built,) = out.glob("cloudworker-*.whl")
    return built
