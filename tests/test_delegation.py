"""No answer by delegation: for every exercise with a reference, calling it fails the check and scores zero.

Each exercise's check declares the workbook functions its answer must not call (``@check(forbids=...)`` in
``course_utils/checks/nbNN.py``); ``exercise_answers.DELEGATING`` holds, for each such exercise, the answer that
calls them, and ``exercise_answers.DELEGATING_TO_LIBRARY`` one answer for each library call a check forbids
(``F.scaled_dot_product_attention`` for causal attention). In a notebook (one namespace, as a kernel has) the
visible check refuses it; ``python -m course_utils
grade`` gives it zero points with the reason. That the solution itself passes the same checks, traps included, is
tests/course/test_exercises.py's (``test_check_passes_on_the_solution_with_hidden_tests``); grading it here again
ran every exercise's solution twice in `make test`, the experiments' training included.
"""

from __future__ import annotations

import csv
import importlib.util

import pytest
from exercise_answers import DELEGATING, DELEGATING_TO_LIBRARY

from course_utils.checks import DelegationError, traps
from course_utils.course.exercises import evaluate, load_exercises
from course_utils.course.grading import DELEGATED, PASSED, grade_submissions
from course_utils.course.manual_grading import manual_items
from course_utils.course.release import (
    make_student_notebook,
    nbgrader_meta,
    read_notebook,
    solution_notebooks,
    write_notebook,
)
from course_utils.ground import paths

NOTEBOOKS = solution_notebooks(paths.solutions_dir())


def _forbidden_all(book, exercise) -> tuple[traps.Reference, ...]:
    namespace: dict = {"__name__": "__main__"}
    exec(book.imports_source, namespace)  # noqa: S102 - the notebook's own imports cell
    return traps.forbidden_by(exercise.check_source, namespace)


def _forbidden(book, exercise) -> tuple[str, ...]:
    """The workbook's own references the exercise's check forbids (its library calls left out)."""
    return tuple(r for r in _forbidden_all(book, exercise) if not isinstance(r, traps.LibraryCall))


def _library_calls(book, exercise) -> list[traps.LibraryCall]:
    return [r for r in _forbidden_all(book, exercise) if isinstance(r, traps.LibraryCall)]


def _exercises():
    for path in NOTEBOOKS:
        book = load_exercises(path)
        for exercise in book.exercises:
            yield pytest.param(book, exercise, id=exercise.grade_id)


EXERCISES = list(_exercises())


@pytest.mark.parametrize(("book", "exercise"), EXERCISES)
def test_every_exercise_with_a_reference_has_a_delegating_answer(book, exercise):
    forbidden = _forbidden(book, exercise)
    if not forbidden:
        assert exercise.grade_id not in DELEGATING, f"{exercise.grade_id}: its check forbids nothing"
        return
    answer = DELEGATING.get(exercise.grade_id)
    assert answer is not None, f"add the answer that calls {forbidden[0]} to exercise_answers.DELEGATING"
    short = {name.removeprefix("course_utils.") for name in forbidden} | {name.rsplit(".", 1)[1] for name in forbidden}
    assert any(name in answer for name in short), f"the delegating answer calls none of {forbidden}"


def test_the_exercises_without_a_reference_are_the_expected_ones():
    without = [exercise.grade_id for book, exercise in (p.values for p in EXERCISES) if not _forbidden(book, exercise)]
    # transformers computes the causal LM loss (the workbook has no copy of it); the experiments measure.
    # The debugging exercises of 01 and 02 fix code the workbook has no reference of (a converter, a mask).
    assert without == ["nb00-kv-experiment", "nb01-debug-converter", "nb01-dtype-experiment", "nb02-causal-lm-loss",
                       "nb02-debug-mask", "nb02-position-experiment", "nb03-lr-experiment", "nb04-temperature-experiment",
                       "nb05-rank-experiment", "nb06-gguf-experiment", "nb07-knee-experiment",
                       "nb08-beta-experiment"]


DELEGATED_EXERCISES = [p for p in EXERCISES if p.values[1].grade_id in DELEGATING]
LIBRARY_CALLS = [pytest.param(book, exercise, library_call, id=f"{exercise.grade_id}:{library_call.path}")
                 for book, exercise in (p.values for p in EXERCISES) for library_call in _library_calls(book, exercise)]


@pytest.mark.parametrize(("book", "exercise"), DELEGATED_EXERCISES)
def test_a_delegating_answer_fails_the_visible_check_in_the_notebook(book, exercise):
    kernel: dict = {"__name__": "__main__"}  # imports, then the answer, then the check: one namespace, like Jupyter
    exec(book.imports_source, kernel)  # noqa: S102
    exec(DELEGATING[exercise.grade_id], kernel)  # noqa: S102
    with pytest.raises(DelegationError) as info:
        exec(exercise.visible_check_source, kernel)  # noqa: S102
    assert any(str(name) in str(info.value) for name in _forbidden(book, exercise)), info.value
    assert "write it yourself" in str(info.value)


def _submission(solution, answers: dict[str, str]):
    """The released notebook with the cells named in ``answers`` (by grade_id) replaced."""
    nb = make_student_notebook(solution)
    for cell in nb.cells:
        grade_id = nbgrader_meta(cell).get("grade_id")
        if grade_id in answers:
            cell.source = answers[grade_id]
    return nb


@pytest.mark.sandbox
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.name[:2] for path in NOTEBOOKS])
def test_the_grader_gives_delegation_zero_points(tmp_path, path):
    solution = read_notebook(path)
    book = load_exercises(path)
    solutions = {exercise.grade_id: exercise.solution_source for exercise in book.exercises}
    delegating = {grade_id: DELEGATING[grade_id] for grade_id in solutions if grade_id in DELEGATING}
    write_notebook(_submission(solution, delegating), tmp_path / "in" / "delegates.ipynb")
    grades = grade_submissions(path, tmp_path / "in", tmp_path / "out", run=False, check_timeout=180, log=None)
    by_student = {grade.student: grade for grade in grades}

    for grade in by_student["delegates"].exercises:
        if grade.grade_id in delegating:
            assert (grade.points, grade.reason) == (0.0, DELEGATED), (grade.grade_id, grade.reason, grade.message)
            assert "course_utils." in grade.message and "write it yourself" in grade.message
        else:
            assert grade.reason != PASSED  # the stub
    with open(tmp_path / "out" / "gradebook.csv", encoding="utf-8") as handle:
        row = next(r for r in csv.DictReader(handle) if r["student"] == "delegates")
    assert all(row[grade_id] == "0" for grade_id in delegating)
    assert DELEGATED in row["notes"]
    feedback = (tmp_path / "out" / "feedback" / "delegates.md").read_text(encoding="utf-8")
    assert "own implementation of this exercise" in feedback
    # The written answers are listed for marking, unanswered ones already at 0.
    items = manual_items(solution)
    if not items:
        return  # notebooks 05 and 06 get theirs with issue 14 (see test_manual_grading)
    with open(tmp_path / "out" / "manual" / "marks.csv", encoding="utf-8") as handle:
        marks = list(csv.DictReader(handle))
    assert {(row["student"], row["grade_id"]) for row in marks} == {("delegates", item.grade_id) for item in items}
    assert all(row["points"] == "0" and row["comment"] == "not answered" for row in marks)
    sheet = (tmp_path / "out" / "manual" / "delegates.md").read_text(encoding="utf-8")
    assert all(f"`{item.grade_id}`" in sheet for item in items) and "**Rubric" in sheet


def test_every_library_call_a_check_forbids_has_an_answer_that_calls_it():
    declared = {(exercise.grade_id, call.path) for _, exercise, call in (p.values for p in LIBRARY_CALLS)}
    answers = {(grade_id, path) for grade_id, by_path in DELEGATING_TO_LIBRARY.items() for path in by_path}
    assert declared == answers
    for grade_id, path in answers:
        assert path.rsplit(".", 1)[1] in DELEGATING_TO_LIBRARY[grade_id][path], (grade_id, path)


def _installed(call: traps.LibraryCall) -> bool:
    return importlib.util.find_spec(call.path.split(".", 1)[0]) is not None


@pytest.mark.parametrize(("book", "exercise", "library_call"), LIBRARY_CALLS)
def test_a_library_call_fails_the_visible_check_with_its_own_message(book, exercise, library_call):
    if not _installed(library_call):
        pytest.skip(f"{library_call.path.split('.')[0]} is not installed here: nothing to call, nothing to trap")
    kernel: dict = {"__name__": "__main__"}
    exec(book.imports_source, kernel)  # noqa: S102
    exec(DELEGATING_TO_LIBRARY[exercise.grade_id][library_call.path], kernel)  # noqa: S102
    with pytest.raises(DelegationError) as info:
        exec(exercise.visible_check_source, kernel)  # noqa: S102
    message = str(info.value)
    assert f"calls {library_call.path}" in message and library_call.why in message, message
    assert "yourself" in library_call.why


def test_the_grader_refuses_a_library_call_in_the_check_and_in_a_hidden_test():
    book = load_exercises(next(path for path in NOTEBOOKS if path.name.startswith("03_")))
    exercise = book.by_grade_id()["nb03-causal-attention"]
    sdpa = "torch.nn.functional.scaled_dot_product_attention"
    result = evaluate(book.imports_source, DELEGATING_TO_LIBRARY[exercise.grade_id][sdpa], exercise.check_source,
                      timeout=120)
    assert not result.passed and result.kind == "delegated" and sdpa in result.message, result
    # Only where the visible check does not look: the hidden test alone must refuse it.
    sneaky = exercise.solution_source.replace(
        "    ### BEGIN SOLUTION", "    if q.shape[-1] == 3:  # a size the visible check does not try\n"
        "        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)\n"
        "    ### BEGIN SOLUTION")
    hidden = "\nq = torch.randn(1, 1, 4, 3)\nassert causal_attention(q, q, q).shape == (1, 1, 4, 3)"
    result = evaluate(book.imports_source, sneaky, exercise.visible_check_source + hidden, timeout=120)
    assert not result.passed and result.kind == "delegated" and result.stage == "check", result
    assert sdpa in result.message and "causal attention yourself" in result.message
