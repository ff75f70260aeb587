"""Where the workbook's folders are: repository root, data/, solutions/, notebooks/, build/."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # course_utils/, one above this file's group
REPO_ROOT = PACKAGE_DIR.parent


def display_path(path: str | os.PathLike[str]) -> str:
    """A path as printed in a notebook: relative to the workbook when it is inside it, else unchanged.

    Stored outputs then read the same on every machine, and show no one's home folder.
    """
    candidate = Path(path)
    if not candidate.is_absolute():
        return str(path)
    try:
        return str(candidate.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


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
