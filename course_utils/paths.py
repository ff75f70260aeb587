"""Where the workbook's folders are: repository root, data/, solutions/, notebooks/, build/."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent


def data_dir() -> Path:
    """The embedded data folder; ``COURSE_DATA_DIR`` overrides it (the rebuild test writes elsewhere)."""
    override = os.environ.get("COURSE_DATA_DIR")
    return Path(override).resolve() if override else REPO_ROOT / "data"


def solutions_dir() -> Path:
    return REPO_ROOT / "solutions"


def notebooks_dir() -> Path:
    return REPO_ROOT / "notebooks"


def build_dir() -> Path:
    """Scratch and output folder (ignored by git); ``COURSE_BUILD_DIR`` overrides it."""
    override = os.environ.get("COURSE_BUILD_DIR")
    path = Path(override).resolve() if override else REPO_ROOT / "build"
    path.mkdir(parents=True, exist_ok=True)
    return path


def work_dir(name: str) -> Path:
    """A fresh-or-existing scratch folder under build/work/ for a notebook's files."""
    path = build_dir() / "work" / name
    path.mkdir(parents=True, exist_ok=True)
    return path
