"""nbval's notebook runs as the course needs them: each notebook's key figures, and a check after its last cell.

`make test` passes ``solutions`` to pytest with ``--nbval-lax``: nbval executes each solution notebook once, in a
kernel of its own (the venv's, ``--nbval-current-env``), a test per code cell, and compares the cells marked
``# NBVAL_CHECK_OUTPUT`` with their stored outputs through ``tests/nbval_sanitize.cfg``. This plugin (loaded by
``-p course_utils.course.nbval_plugin`` in pyproject.toml's pytest options) adds, from that same execution:

- each notebook's kernel records its key figures (:func:`course_utils.reporting.key_figures.record`) into a file
  of its own, ``build/nbval/<stem>.figures.json``, named by ``COURSE_FIGURES_FILE`` when nbval starts the kernel;
- after the notebook's last cell, one more test, ``<notebook>::after the run``, calls :func:`check_notebook_run`:
  the one place that sees a notebook's path and its figures together, where every check of a whole run goes.

Imported by pytest only, never by the workbook's own modules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from course_utils.course.runner import environ
from course_utils.ground import paths
from course_utils.reporting import claims
from course_utils.reporting.key_figures import FIGURES_ENV

try:
    from nbval.plugin import IPyNbCell
except ImportError:  # nbval is in the dev extra; without it pytest runs the unit tests only
    IPyNbCell = None


@dataclass(frozen=True)
class NotebookRun:
    """One notebook executed by nbval: the notebook, and the file its kernel records key figures in."""

    notebook: Path
    figures_file: Path

    def figures(self) -> dict[str, Any]:
        if not self.figures_file.exists():
            return {}
        return json.loads(self.figures_file.read_text(encoding="utf-8"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: runs notebooks or trains models (seconds to minutes)")


def notebook_run(notebook: Path) -> NotebookRun:
    return NotebookRun(Path(notebook), paths.build_dir() / "nbval" / f"{Path(notebook).stem}.figures.json")


def check_notebook_run(run: NotebookRun) -> None:
    """What must hold once every cell of ``run.notebook`` has run: here each check of a whole execution goes."""
    figures = run.figures()
    assert figures, (f"{run.notebook.name} recorded no key figure (course_utils.reporting.key_figures.record; "
                     f"looked in {run.figures_file})")
    # Every markdown sentence tied to a figure must hold on the figures this very execution recorded.
    failures = claims.failed_claims(run.notebook, figures, profile="tiny")
    assert not failures, claims.report(failures)


class AfterTheRun(pytest.Item):
    """The test after a notebook's last cell: :func:`check_notebook_run` on what the execution left."""

    def __init__(self, *, run: NotebookRun, **kwargs):
        super().__init__(**kwargs)
        self.run = run

    def runtest(self) -> None:
        check_notebook_run(self.run)

    def reportinfo(self):
        return self.path, None, f"{self.run.notebook.name}: after the run"


def _is_nbval_cell(item: pytest.Item) -> bool:
    return IPyNbCell is not None and isinstance(item, IPyNbCell)


@pytest.hookimpl(tryfirst=True)  # before `-m "not slow"` deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Add each notebook's after-the-run test behind its last cell, and mark the cells slow."""
    added: list[pytest.Item] = []
    for index, item in enumerate(items):
        added.append(item)
        if not _is_nbval_cell(item):
            continue
        item.add_marker(pytest.mark.slow)  # a cell is a piece of a notebook's execution: `-m "not slow"` skips it
        last = index + 1 == len(items) or items[index + 1].parent is not item.parent
        if last:
            after = AfterTheRun.from_parent(item.parent, name="after the run", run=notebook_run(item.path))
            after.add_marker(pytest.mark.slow)
            added.append(after)
    items[:] = added


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    """Start a notebook's kernel (nbval does, in its first cell's setup) with the environment the course needs."""
    notebook = item.parent
    if not _is_nbval_cell(item) or getattr(notebook, "kernel", None) is not None:
        return (yield)
    run = notebook_run(item.path)
    run.figures_file.parent.mkdir(parents=True, exist_ok=True)
    run.figures_file.unlink(missing_ok=True)
    # Offline, so that PROFILE = "auto" in the parameters cell resolves to the tiny profile, as in CI.
    with environ({FIGURES_ENV: str(run.figures_file), "HF_HUB_OFFLINE": "1"}):
        return (yield)


def pytest_report_header(config: pytest.Config) -> list[str]:
    if not (getattr(config.option, "nbval_lax", False) or getattr(config.option, "nbval", False)):
        return []
    return [f"nbval: each notebook's key figures go to {paths.build_dir() / 'nbval'}/<notebook>.figures.json"]
