"""Every hidden test can fail: on the released stub, and on each plausible mistake of exercise_answers.WRONG.

The hidden tests run here on their own, without the visible check before them, so this proves that they check
something themselves (the visible checks are proven in tests/test_checks_nb0*.py and tests/test_exercises.py).
They run in this process, in a fresh namespace per answer, as they would in a kernel after the imports cell.
"""

from __future__ import annotations

import pytest
from exercise_answers import WRONG

from course_utils.course.exercises import load_exercises
from course_utils.course.release import find_regions, solution_notebooks
from course_utils.ground import paths


def hidden_source(check_source: str) -> str:
    """The lines inside the hidden-test regions of a check cell (markers left out)."""
    lines = check_source.split("\n")
    return "\n".join(
        line
        for region in find_regions(check_source)
        if region.kind == "hidden"
        for line in lines[region.begin + 1 : region.end]
    )


def _cases():
    for path in solution_notebooks(paths.solutions_dir()):
        book = load_exercises(path)
        for exercise in book.exercises:
            yield pytest.param(book, exercise, id=exercise.grade_id)


CASES = list(_cases())


def _passes(book, answer: str, hidden: str) -> tuple[bool, str]:
    namespace: dict = {"__name__": "__main__"}
    exec(book.imports_source, namespace)  # noqa: S102 - the notebook's imports cell
    exec(answer, namespace)  # noqa: S102
    try:
        exec(hidden, namespace)  # noqa: S102
    except Exception as exc:  # noqa: BLE001 - a failing assert, or the stub's NotImplementedError
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


def _mutated(solution: str, old: str, new: str, grade_id: str) -> str:
    assert solution.count(old) == 1, f"{grade_id}: {old!r} is not in the solution exactly once; update WRONG"
    return solution.replace(old, new)


@pytest.mark.parametrize(("book", "exercise"), CASES)
def test_the_hidden_tests_fail_on_the_stub_and_on_every_listed_mistake(book, exercise):
    hidden = hidden_source(exercise.check_source)
    assert hidden.strip(), f"{exercise.check_grade_id} has no hidden test"
    assert _passes(book, exercise.solution_source, hidden)[0], "the hidden tests fail on the solution"
    assert not _passes(book, exercise.stub_source, hidden)[0], "the hidden tests pass on the stub"
    mistakes = WRONG.get(exercise.grade_id, [])
    assert mistakes, f"list at least one plausible mistake for {exercise.grade_id} in exercise_answers.WRONG"
    for mistake in mistakes:
        answer = _mutated(exercise.solution_source, mistake.old, mistake.new, exercise.grade_id)
        passed, _ = _passes(book, answer, hidden)
        assert not passed, f"the hidden tests of {exercise.grade_id} miss a mistake: {mistake.why}"


def test_every_listed_mistake_belongs_to_an_exercise():
    grade_ids = {case.values[1].grade_id for case in CASES}
    assert set(WRONG) <= grade_ids, set(WRONG) - grade_ids
