"""The colab rehearsal: every notebook gets DEVICE="cpu" and step counts its parameters cell really has."""

from __future__ import annotations

import nbformat
import pytest

from course_utils.course import colab_rehearsal
from course_utils.course.release import solution_notebooks

NOTEBOOKS = solution_notebooks()


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_every_rehearsal_parameter_exists_in_the_notebook(notebook):
    parameters = colab_rehearsal.rehearsal_parameters(notebook)
    assert parameters["PROFILE"] == "colab" and parameters["DEVICE"] == "cpu"
    assert colab_rehearsal.notebook_key(notebook) in colab_rehearsal.REHEARSAL_PARAMETERS


def test_a_stale_parameter_name_is_caught_before_anything_runs(tmp_path, monkeypatch):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell('PROFILE = "auto"\nDEVICE = None\nSTEPS = None  # a comment\n')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    path = tmp_path / "09_demo.ipynb"
    nbformat.write(nb, path)
    assert colab_rehearsal.parameter_names(path) == {"PROFILE", "DEVICE", "STEPS"}
    monkeypatch.setitem(colab_rehearsal.REHEARSAL_PARAMETERS, "09", {"TRAIN_STEPS": 1})
    with pytest.raises(KeyError, match="09_demo.ipynb's parameters cell has no TRAIN_STEPS"):
        colab_rehearsal.rehearsal_parameters(path)
    with pytest.raises(KeyError, match="TRAIN_STEPS"):
        colab_rehearsal.rehearse([path], out_dir=tmp_path / "out", verbose=False)  # before building anything
