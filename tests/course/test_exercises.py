"""Every exercise's check fails on the stub and passes on the solution; evaluate() isolates and limits the code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from nb_builders import EXAMPLE_SOLUTION, WORD_COUNT_SOLUTION

from course_utils.course.exercises import evaluate, grade, load_exercises, parse_exercises, student_answers
from course_utils.course.release import make_student_notebook, read_notebook, solution_notebooks
from course_utils.ground import paths


def _all_exercises():
    """(notebook, exercise) for every exercise of every real solution notebook, and of the example fixture."""
    cases = []
    for path, label in [(path, "") for path in solution_notebooks(paths.solutions_dir())] + [
        (EXAMPLE_SOLUTION, "fixture-")
    ]:
        book = load_exercises(path)
        cases += [pytest.param(book, exercise, id=label + exercise.grade_id) for exercise in book.exercises]
    return cases


EXERCISES = _all_exercises()
# A guard against hangs, not a speed test: the experiments train several times, slowly on a loaded 2-core machine.
TIMEOUT = 300


@pytest.mark.parametrize(("book", "exercise"), EXERCISES)
def test_check_fails_on_the_released_stub(book, exercise):
    result = evaluate(book.imports_source, exercise.stub_source, exercise.visible_check_source, timeout=TIMEOUT)
    assert not result.passed, f"{exercise.check_grade_id} passes on the stub: it checks nothing."
    assert "not written yet" in result.message, result.message


@pytest.mark.parametrize(("book", "exercise"), EXERCISES)
def test_check_passes_on_the_solution_with_hidden_tests(book, exercise):
    result = evaluate(book.imports_source, exercise.solution_source, exercise.check_source, timeout=TIMEOUT)
    assert result.passed, f"{exercise.check_grade_id} fails on its own solution: {result.message}"


# --- parsing -----------------------------------------------------------------------------------------------------


def test_parse_exercises_of_the_example():
    book = load_exercises(EXAMPLE_SOLUTION)
    assert book.name == "01_example.ipynb"
    assert book.imports_source == "from course_utils import checks\nfrom course_utils.reporting.key_figures import record"
    (exercise,) = book.exercises
    assert (exercise.grade_id, exercise.check_grade_id, exercise.points) == (
        "nb01-word-count",
        "nb01-word-count-check",
        2.0,
    )
    assert exercise.solution_source == WORD_COUNT_SOLUTION
    assert exercise.stub_source.endswith("    # YOUR CODE HERE\n    raise NotImplementedError()")
    assert "spaced" in exercise.check_source and "spaced" not in exercise.visible_check_source
    assert exercise.visible_check_source.endswith('checks.passed("word_count counts words")')


def test_parse_a_student_notebook():
    book = parse_exercises(make_student_notebook(read_notebook(EXAMPLE_SOLUTION)), "01_example.ipynb")
    (exercise,) = book.exercises
    assert exercise.solution_source == exercise.stub_source
    assert exercise.check_source == exercise.visible_check_source


def _student(answer: str | None):
    """The released example with the student's answer typed in (None: the student deleted the cell)."""
    nb = make_student_notebook(read_notebook(EXAMPLE_SOLUTION))
    if answer is None:
        del nb.cells[5]
    else:
        nb.cells[5].source = answer
    return nb


def test_student_answers_by_grade_id_tolerate_deleted_cells():
    answer = "def word_count(text):\n    return 99"
    assert student_answers(_student(answer), ["nb01-word-count", "nb01-other"]) == {
        "nb01-word-count": answer,
        "nb01-other": None,
    }
    assert student_answers(_student(None), ["nb01-word-count"]) == {"nb01-word-count": None}


def test_grade_uses_the_hidden_tests_and_counts_points():
    good = "def word_count(text):\n    return len(text.split())"
    only_visible = (
        "def word_count(text):\n    return text.count(' ') + 1"  # right on the visible example only
    )
    assert [g.points for g in grade(_student(good), EXAMPLE_SOLUTION)] == [2.0]
    (partial,) = grade(_student(only_visible), EXAMPLE_SOLUTION)
    assert partial.points == 0 and partial.max_points == 2
    assert "spaced   out" in partial.result.message
    (missing,) = grade(_student(None), EXAMPLE_SOLUTION)
    assert missing.points == 0 and "missing" in missing.result.message


# --- evaluate() --------------------------------------------------------------------------------------------------

IMPORTS = "from course_utils import checks"
CHECK = 'checks.expect_equal(checks.call(double, 21), 42, "double(21)")\nchecks.passed("double doubles")'


def test_evaluate_passes_and_keeps_the_output():
    result = evaluate(IMPORTS, "def double(x):\n    return 2 * x", CHECK)
    assert result.passed and result.message == "passed"
    assert "double doubles" in result.output
    assert 0 < result.seconds < 30


def test_evaluate_reports_the_check_message_of_a_wrong_answer():
    result = evaluate(IMPORTS, "def double(x):\n    return x + 2", CHECK)
    assert not result.passed
    assert result.message == "double(21): expected 42, got 23."


def test_evaluate_reports_a_crash_with_its_cell_and_line():
    result = evaluate(IMPORTS, "def double(x):\n    return 2 * x\n\nprint(1 / 0)", CHECK)
    assert not result.passed
    assert (
        result.message == "ZeroDivisionError: division by zero (in the exercise cell, line 4: `print(1 / 0)`)"
    )


def test_evaluate_reports_a_bare_assert_and_a_syntax_error():
    bare = evaluate(IMPORTS, "def double(x):\n    return x", "assert double(2) == 4")
    assert bare.message == "AssertionError (in the check cell, line 1: `assert double(2) == 4`)"
    syntax = evaluate(IMPORTS, "def double(x)\n    return x", CHECK)
    assert not syntax.passed and syntax.message.startswith("SyntaxError in the exercise cell, line 1")


def test_evaluate_reports_a_process_that_dies():
    result = evaluate(IMPORTS, "import os\nos._exit(3)", CHECK)
    assert not result.passed and "exit code 3" in result.message


def test_evaluate_stops_an_endless_loop():
    result = evaluate(IMPORTS, "while True:\n    pass", CHECK, timeout=2)
    assert not result.passed
    assert result.message.startswith("timed out after 2 s")
    assert result.seconds < 15


def test_evaluate_runs_in_its_own_process_and_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COURSE_EVALUATE_PROBE", raising=False)
    code = (
        "import os, sys\n"
        "open('answer.txt', 'w').write('42')\n"
        "os.environ['COURSE_EVALUATE_PROBE'] = 'set'\n"
        "sys.modules['course_utils'].__version__ = 'hacked'\n"
        "def double(x):\n    return 2 * x"
    )
    workdir = tmp_path / "work"
    pid_check = (
        f"assert os.getpid() != {os.getpid()}, 'ran in the caller'\nassert os.getcwd() == {str(workdir)!r}"
    )
    result = evaluate(IMPORTS + "\nimport os", code, CHECK + "\n" + pid_check, workdir=workdir)
    assert result.passed, result.message
    assert (workdir / "answer.txt").read_text() == "42"
    assert not (tmp_path / "answer.txt").exists()
    assert "COURSE_EVALUATE_PROBE" not in os.environ
    import course_utils

    assert course_utils.__version__ != "hacked"


def test_evaluate_uses_a_fresh_temporary_folder_each_time():
    first = evaluate("import os", "print(os.getcwd())\nopen('left.txt', 'w').write('x')", "")
    second = evaluate("import os", "print(os.getcwd())\nprint(os.path.exists('left.txt'))", "")
    assert first.passed and second.passed
    assert second.output.split("\n")[1] == "False"
    assert not Path(first.output.split("\n")[0]).exists()  # the temporary folder is gone afterwards


def test_evaluate_starts_from_a_clean_namespace():
    evaluate(IMPORTS, "def double(x):\n    return 2 * x", CHECK)
    result = evaluate(IMPORTS, "", CHECK)
    assert not result.passed and "NameError" in result.message
