"""Where the workbook's folders are: repository root, data/, solutions/, notebooks/, build/."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # course_utils/, one above this file's group
REPO_ROOT = PACKAGE_DIR.parent


# mkdtemp's names: the prefix, then 8 characters of [a-z0-9_].
RUN_FOLDER = re.compile(r"(?<![^/\\])run_[a-z0-9_]{8}(?=$|[/\\])")


def display_path(path: str | os.PathLike[str]) -> str:
    """A path as printed in a notebook: relative to the workbook when it is inside it, else unchanged.

    Stored outputs then read the same on every machine, and show no one's home folder.
    A run's own folder, made by ``tempfile.mkdtemp(prefix="run_")`` so that two runs never share one, shows as
    ``<run>``: its random name would change the output on every run.
    """
    candidate = Path(path)
    if candidate.is_absolute():
        with contextlib.suppress(ValueError):  # outside the workbook: the path as given
            candidate = candidate.resolve().relative_to(REPO_ROOT)
    return RUN_FOLDER.sub("<run>", str(candidate))


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
