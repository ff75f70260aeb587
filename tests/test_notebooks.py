"""Every solution notebook runs top to bottom with papermill on the tiny profile, once: the run fails on any error,
records the key figures, and the cells marked ``# NBVAL_CHECK_OUTPUT`` print what the stored notebook shows."""

from __future__ import annotations

import pytest

from course_utils.course.release import solution_notebooks
from course_utils.course.runner import checked_output_differences, run_notebook

NOTEBOOKS = solution_notebooks()


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_runs_on_the_tiny_profile(notebook, tmp_path):
    executed = tmp_path / notebook.name
    result = run_notebook(notebook, profile="tiny", output=executed, figures_file=tmp_path / "figures.json",
                          cell_timeout=300)
    assert result.ok, f"{notebook.name} failed at {result.failed_cell}: {result.error}"
    assert result.figures, f"{notebook.name} recorded no key figure (course_utils.reporting.key_figures.record)"
    differences = checked_output_differences(notebook, executed)
    assert not differences, (f"{notebook.name}: outputs that should not change did (re-execute with "
                             "`python -m course_utils run --update-solutions` if the change is meant):\n"
                             + "\n".join(differences))
