"""Small synthetic notebooks for the release, exercise and runner tests (built with nbformat, ids deterministic)."""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from course_utils.course.release import (
    COLAB_GPU_METADATA,
    badge_url,
    imported_modules,
    modules_line,
    setup_cell_source,
    write_notebook,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXAMPLE_SOLUTION = FIXTURES / "solutions" / "01_example.ipynb"

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def code(source: str, *, tags: tuple[str, ...] = (), nbgrader: dict | None = None) -> NotebookNode:
    """A code cell with optional tags and nbgrader metadata."""
    cell = nbformat.v4.new_code_cell(source)
    if tags:
        cell.metadata["tags"] = list(tags)
    if nbgrader is not None:
        cell.metadata["nbgrader"] = nbgrader
    return cell


def markdown(source: str, *, nbgrader: dict | None = None) -> NotebookNode:
    """A markdown cell."""
    cell = nbformat.v4.new_markdown_cell(source)
    if nbgrader is not None:
        cell.metadata["nbgrader"] = nbgrader
    return cell


def solution_meta(grade_id: str) -> dict:
    """nbgrader metadata of a solution cell."""
    return {"grade": False, "solution": True, "locked": False, "grade_id": grade_id, "schema_version": 3}


def check_meta(grade_id: str, points: float = 1) -> dict:
    """nbgrader metadata of a check cell."""
    return {
        "grade": True,
        "solution": False,
        "locked": True,
        "points": points,
        "grade_id": grade_id,
        "schema_version": 3,
    }


def answer_meta(grade_id: str, points: float = 2) -> dict:
    """nbgrader metadata of a written answer graded by hand (a markdown cell)."""
    return {"grade": True, "solution": True, "locked": False, "task": False, "points": points, "grade_id": grade_id,
            "schema_version": 3}


def task_meta(grade_id: str, points: float = 2) -> dict:
    """nbgrader metadata of a task graded by hand (a read-only markdown cell; the work goes in the cells after it)."""
    return {"grade": False, "solution": False, "locked": True, "task": True, "points": points, "grade_id": grade_id,
            "schema_version": 3}


WRITTEN_QUESTION = "### Question · Why count words? (2 points)\n\nSay in two sentences why we count words."
WRITTEN_ANSWER = (
    "### BEGIN SOLUTION\nTo measure a text's length in a unit people read.\n\n**Rubric (2 points):** 1 for the unit, "
    "1 for naming a use.\n### END SOLUTION"
)
TASK = "### Task · Plot it (1 point)\n\nPlot the word counts of three texts in the cells below this one."


def notebook(cells: list[NotebookNode]) -> NotebookNode:
    """A v4.5 notebook of ``cells`` with ids cell-0, cell-1, ... (so files are reproducible)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata.update(copy.deepcopy(COLAB_GPU_METADATA))
    nb.cells = cells
    for index, cell in enumerate(cells):
        cell["id"] = f"cell-{index}"
    return nb


def header_cells(
    name: str, title: str = "Example", parameters: str = "", imports: str = ""
) -> list[NotebookNode]:
    """The four cells every solution notebook starts with: title with badge, setup, parameters, imports."""
    badge = f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({badge_url(name)})"
    imports_cell = code(imports or "from course_utils import checks", tags=("imports",))
    # The title names the helper modules the imports cell brings in, as the release requires.
    imports_only = notebook([imports_cell])
    helpers_line = f"\n\n{modules_line(imports_only)}" if imported_modules(imports_only) else ""
    return [
        markdown(f"# {name[:2]} · {title}\n\nWhat this notebook answers.\n\nBuilds on: nothing.{helpers_line}\n\n{badge}"),
        code(setup_cell_source()),
        code('PROFILE = "auto"' + (f"\n{parameters}" if parameters else ""), tags=("parameters",)),
        imports_cell,
    ]


WORD_COUNT_SOLUTION = '''\
def word_count(text: str) -> int:
    """How many whitespace-separated words ``text`` has."""
    ### BEGIN SOLUTION
    return len(text.split())
    ### END SOLUTION'''

WORD_COUNT_CHECK = """\
checks.expect_equal(checks.call(word_count, "the quick brown fox"), 4, 'word_count("the quick brown fox")')
### BEGIN HIDDEN TESTS
checks.expect_equal(checks.call(word_count, "  spaced   out  "), 2, "word_count('  spaced   out  ')")
### END HIDDEN TESTS
checks.passed("word_count counts words")"""


def example_solution() -> NotebookNode:
    """The example solution notebook kept in tests/fixtures/solutions/01_example.ipynb."""
    return notebook(
        [
            *header_cells(
                "01_example.ipynb",
                "Counting words",
                parameters='TEXT = "the quick brown fox jumps"',
                imports="from course_utils import checks\nfrom course_utils.reporting.key_figures import record",
            ),
            markdown("## Exercise: count words\n\nWrite `word_count(text)`; the next cell checks it."),
            code(WORD_COUNT_SOLUTION, nbgrader=solution_meta("nb01-word-count")),
            code(WORD_COUNT_CHECK, nbgrader=check_meta("nb01-word-count-check", points=2)),
            markdown("Later cells use the reference, never the student's function."),
            code('# NBVAL_CHECK_OUTPUT\nprint(record("words", len(TEXT.split()), "words"))'),
        ]
    )


# A small assignment for the grading tests: three fast exercises, hidden tests as a check call and as a bare assert.
GRADING_NAME = "02_grading.ipynb"
GRADING_SOLUTIONS = {
    "nb02-word-count": "def word_count(text):\n    ### BEGIN SOLUTION\n    return len(text.split())\n    ### END SOLUTION",
    "nb02-squares": "def squares(n):\n    ### BEGIN SOLUTION\n    return [i * i for i in range(n)]\n    ### END SOLUTION",
    "nb02-initials": (
        'def initials(name):\n    ### BEGIN SOLUTION\n    return "".join(word[0].upper() for word in name.split())\n'
        "    ### END SOLUTION"
    ),
}
GRADING_CHECKS = {
    "nb02-word-count": (
        2,
        'checks.expect_equal(checks.call(word_count, "the quick brown fox"), 4, "word_count(\'the quick brown fox\')")\n'
        "### BEGIN HIDDEN TESTS\n"
        'checks.expect_equal(checks.call(word_count, "  spaced   out  "), 2, "word_count(\'  spaced   out  \')")\n'
        "### END HIDDEN TESTS\n"
        'checks.passed("word_count counts words")',
    ),
    "nb02-squares": (
        1,
        'checks.expect_equal(checks.call(squares, 4), [0, 1, 4, 9], "squares(4)")\n'
        "### BEGIN HIDDEN TESTS\n"
        'checks.expect_equal(checks.call(squares, 0), [], "squares(0)")\n'
        "### END HIDDEN TESTS\n"
        'checks.passed("squares squares")',
    ),
    "nb02-initials": (
        1,
        'checks.expect_equal(checks.call(initials, "Ada Lovelace"), "AL", "initials(\'Ada Lovelace\')")\n'
        "### BEGIN HIDDEN TESTS\n"
        'assert initials("grace brewster hopper") == "GBH"\n'
        "### END HIDDEN TESTS\n"
        'checks.passed("initials are right")',
    ),
}


def grading_solution(*, manual: bool = False) -> NotebookNode:
    """A solution notebook with three fast exercises (4 points in all), for the grading tests.

    With ``manual``, a written answer (2 points) and a task (1 point) graded by hand follow the exercises.
    """
    cells = header_cells(GRADING_NAME, "Three small functions")
    for number, (grade_id, solution) in enumerate(GRADING_SOLUTIONS.items(), start=1):
        points, check = GRADING_CHECKS[grade_id]
        cells += [
            markdown(
                f"### Exercise {number} · `{grade_id[5:]}` ({points} point{'s' if points > 1 else ''})\n\n"
                "Write it; the next cell checks it."
            ),
            code(solution, nbgrader=solution_meta(grade_id)),
            code(check, nbgrader=check_meta(f"{grade_id}-check", points=points)),
        ]
    if manual:
        cells += [
            code('print("word counts: 4, 2")'),
            markdown(WRITTEN_QUESTION),
            markdown(WRITTEN_ANSWER, nbgrader=answer_meta("nb02-why-count", 2)),
            markdown(TASK, nbgrader=task_meta("nb02-plot-task", 1)),
            markdown("## After the task\n\nThe students' work for the task ends at this heading."),
        ]
    cells += [markdown("Later cells never use the student's functions."), code('print("the end")')]
    return notebook(cells)


if __name__ == "__main__":  # regenerate the fixture: python tests/nb_builders.py
    write_notebook(example_solution(), EXAMPLE_SOLUTION)
