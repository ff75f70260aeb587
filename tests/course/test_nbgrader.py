"""nbgrader compatibility: solutions/ are valid nbgrader source notebooks, and nbgrader's release and grades match ours.

nbgrader is not a dependency of the workbook: these tests skip when it is not installed (``pip install nbgrader``).
"""

from __future__ import annotations

import copy
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from nb_builders import EXAMPLE_SOLUTION, GRADING_NAME, grading_solution
from test_grading import ANSWERS, INITIALS_WRONG, SQUARES_NOT_EMPTY, _student, _write

from course_utils.course.grading import grade_submissions
from course_utils.course.release import (
    make_student_notebook,
    read_notebook,
    solution_notebooks,
    without_nbval_markers,
)
from course_utils.ground import paths

nbgrader = pytest.importorskip("nbgrader", reason="nbgrader is not installed (pip install nbgrader)")


def _solutions():
    """Every real solution notebook, the example fixture and the grading fixture (also with hand-graded items)."""
    cases = [
        pytest.param(read_notebook(path), id=path.name) for path in solution_notebooks(paths.solutions_dir())
    ]
    cases.append(pytest.param(read_notebook(EXAMPLE_SOLUTION), id="fixture-01_example"))
    cases.append(pytest.param(grading_solution(), id="fixture-02_grading"))
    cases.append(pytest.param(grading_solution(manual=True), id="fixture-02_grading-written-answers"))
    return cases


@pytest.mark.parametrize("nb", _solutions())
def test_solution_metadata_is_valid_nbgrader_schema_3(nb):
    from nbgrader.nbgraderformat import MetadataValidator

    MetadataValidator().validate_nb(copy.deepcopy(nb))  # raises ValidationError on a bad cell


def test_nbgrader_validator_rejects_what_our_release_rejects():
    from nbgrader.nbgraderformat import MetadataValidator, ValidationError

    nb = grading_solution()
    del nb.cells[6].metadata["nbgrader"]["points"]  # a check cell without points
    with pytest.raises(ValidationError, match="does not have points"):
        MetadataValidator().validate_nb(nb)


@pytest.mark.parametrize("nb", _solutions())
def test_nbgrader_preprocessors_make_the_same_student_cells_as_our_release(nb):
    from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions

    theirs, resources = ClearSolutions().preprocess(copy.deepcopy(nb), {})
    theirs, _ = ClearHiddenTests().preprocess(theirs, resources)
    assert _sources(theirs) == _sources(make_student_notebook(nb))


def _sources(nb) -> list[str]:
    """Cell sources as our release writes them: the Colab badge on notebooks/ and no nbval markers (nbgrader keeps
    both as they are)."""
    return [without_nbval_markers(cell.source.replace("/blob/main/solutions/", "/blob/main/notebooks/"))
            for cell in nb.cells]


def _nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in ``course`` (nbgrader calls the ``alembic`` script next to this Python)."""
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(paths.REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=course,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.sandbox
@pytest.mark.slow
def test_nbgrader_generates_and_autogrades_our_solution_like_we_do(tmp_path):
    course = tmp_path / "course"
    (course / "nbgrader_config.py").parent.mkdir(parents=True)
    (course / "nbgrader_config.py").write_text(
        'c = get_config()\nc.CourseDirectory.course_id = "llm-workbook"\n'
    )
    _write(grading_solution(), course / "source" / "ps1" / GRADING_NAME)  # solutions/NN_*.ipynb, as it is
    _nbgrader(course, "generate_assignment", "ps1", "--force")
    released = read_notebook(course / "release" / "ps1" / GRADING_NAME)
    assert _sources(released) == _sources(make_student_notebook(grading_solution()))

    submissions = {
        "full": _student(ANSWERS),
        "partial": _student({**ANSWERS, "nb02-squares": SQUARES_NOT_EMPTY, "nb02-initials": INITIALS_WRONG}),
        "blank": _student(),
    }
    for student, nb in submissions.items():
        _write(nb, course / "submitted" / student / "ps1" / GRADING_NAME)
    _nbgrader(course, "autograde", "ps1", "--create", "--force")
    _nbgrader(course, "export", "--to", "grades.csv")
    with open(course / "grades.csv", encoding="utf-8") as handle:
        theirs = {row["student_id"]: float(row["score"]) for row in csv.DictReader(handle)}

    # Our grader reads nbgrader's submitted/<student>/<assignment>/ layout as it is.
    shutil.copytree(course / "submitted", tmp_path / "submitted")
    grades = grade_submissions(
        course / "source" / "ps1" / GRADING_NAME,
        tmp_path / "submitted",
        tmp_path / "ours",
        run=False,
        check_timeout=60,
        log=None,
    )
    assert (
        {grade.student: grade.total for grade in grades}
        == theirs
        == {"blank": 0.0, "full": 4.0, "partial": 2.0}
    )
