"""Every solution notebook runs top to bottom with papermill on the tiny profile (nbval re-runs them in
``make test`` and compares the cells marked ``# NBVAL_CHECK_OUTPUT``)."""

from __future__ import annotations

import pytest

from course_utils.course.release import solution_notebooks
from course_utils.course.runner import run_notebook

NOTEBOOKS = solution_notebooks()


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_runs_on_the_tiny_profile(notebook, tmp_path):
    result = run_notebook(notebook, profile="tiny", output=tmp_path / notebook.name,
                          figures_file=tmp_path / "figures.json", cell_timeout=300)
    assert result.ok, f"{notebook.name} failed at {result.failed_cell}: {result.error}"
    assert result.figures, f"{notebook.name} recorded no key figure (course_utils.reporting.key_figures.record)"
