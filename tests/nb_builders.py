"""Small synthetic notebooks for the release, exercise and runner tests (built with nbformat, ids deterministic)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat import NotebookNode

from course_utils.release import badge_url, setup_cell_source, write_notebook

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


def notebook(cells: list[NotebookNode]) -> NotebookNode:
    """A v4.5 notebook of ``cells`` with ids cell-0, cell-1, ... (so files are reproducible)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = cells
    for index, cell in enumerate(cells):
        cell["id"] = f"cell-{index}"
    return nb


def header_cells(
    name: str, title: str = "Example", parameters: str = "", imports: str = ""
) -> list[NotebookNode]:
    """The four cells every solution notebook starts with: title with badge, setup, parameters, imports."""
    badge = f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({badge_url(name)})"
    return [
        markdown(f"# {name[:2]} · {title}\n\nWhat this notebook answers.\n\n{badge}"),
        code(setup_cell_source()),
        code('PROFILE = "auto"' + (f"\n{parameters}" if parameters else ""), tags=("parameters",)),
        code(imports or "from course_utils import checks", tags=("imports",)),
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
                imports="from course_utils import checks\nfrom course_utils.figures import record",
            ),
            markdown("## Exercise: count words\n\nWrite `word_count(text)`; the next cell checks it."),
            code(WORD_COUNT_SOLUTION, nbgrader=solution_meta("nb01-word-count")),
            code(WORD_COUNT_CHECK, nbgrader=check_meta("nb01-word-count-check", points=2)),
            markdown("Later cells use the reference, never the student's function."),
            code('# NBVAL_CHECK_OUTPUT\nprint(record("words", len(TEXT.split()), "words"))'),
        ]
    )


if __name__ == "__main__":  # regenerate the fixture: python tests/nb_builders.py
    write_notebook(example_solution(), EXAMPLE_SOLUTION)
