"""Written answers graded by hand: released without their rubric, listed per student, marked, merged back."""

from __future__ import annotations

import copy
import csv
import io
import re
from pathlib import Path

import pytest
from nb_builders import (
    GRADING_NAME,
    TASK,
    WRITTEN_QUESTION,
    answer_meta,
    example_solution,
    grading_solution,
    markdown,
    task_meta,
)
from test_grading import ANSWERS

from course_utils.__main__ import main
from course_utils.course.grading import exercise_titles, grade_submissions, manual_answers
from course_utils.course.manual_grading import (
    FEEDBACK_HEADING,
    NOT_ANSWERED,
    MarkingError,
    manual_items,
    read_marks,
    student_answers,
)
from course_utils.course.release import (
    make_student_notebook,
    nbgrader_meta,
    read_notebook,
    solution_notebooks,
    validate_solution_notebook,
    write_notebook,
)
from course_utils.ground import paths

PATH = Path("01_example.ipynb")
ANSWER_TEXT = "Words are the unit readers count, so word counts compare texts fairly."


# --- the release ------------------------------------------------------------------------------------------------


def test_the_student_gets_the_question_and_an_empty_answer_but_no_rubric():
    solution = grading_solution(manual=True)
    assert validate_solution_notebook(solution, Path(GRADING_NAME)) == []
    student = make_student_notebook(solution)
    by_id = {nbgrader_meta(cell).get("grade_id"): cell for cell in student.cells}
    assert by_id["nb02-why-count"].source == "YOUR ANSWER HERE"
    assert by_id["nb02-plot-task"].source == TASK  # a task is read-only and released as it is
    text = "\n".join(cell.source for cell in student.cells)
    assert WRITTEN_QUESTION in text and "Rubric" not in text and "unit people read" not in text
    assert nbgrader_meta(by_id["nb02-why-count"])["points"] == 2  # the points stay, for nbgrader and the grader


def _with(cell):
    nb = example_solution()
    cell["id"] = "cell-extra"
    nb.cells.append(cell)
    return nb


@pytest.mark.parametrize(("cell", "problem"), [
    (markdown("### BEGIN SOLUTION\nx\n### END SOLUTION", nbgrader={**answer_meta("nb01-a"), "points": 0}),
     "a written answer needs nbgrader points > 0"),
    (markdown("### BEGIN SOLUTION\nx\n### END SOLUTION", nbgrader={**answer_meta("nb01-a"), "locked": True}),
     "a written answer (markdown solution cell) has grade: true, locked: false"),
    (markdown("Do it.", nbgrader={**task_meta("nb01-t"), "locked": False}), "a task cell is markdown"),
    (markdown("Do it.", nbgrader={**task_meta("nb01-t"), "points": None}), "a task cell needs nbgrader points"),
    (markdown("Do it.", nbgrader={**task_meta("zz-t")}), "must start with 'nb01-'"),
    (markdown("Why?\n\n**Rubric:** one point per reason.\n\n### BEGIN SOLUTION\nx\n### END SOLUTION",
              nbgrader=answer_meta("nb01-a")), "a rubric outside"),
    (markdown("## Rubric\n\nbe kind"), "a rubric outside"),
])
def test_the_release_refuses_a_hand_graded_cell_that_breaks_a_rule(cell, problem):
    problems = validate_solution_notebook(_with(cell), PATH)
    assert any(problem in found for found in problems), problems


def test_items_questions_and_rubrics_are_read_from_the_solution():
    items = manual_items(grading_solution(manual=True))
    assert [(item.grade_id, item.kind, item.points) for item in items] == [
        ("nb02-why-count", "answer", 2.0), ("nb02-plot-task", "task", 1.0)]
    assert items[0].question == WRITTEN_QUESTION and items[0].rubric.startswith("To measure a text's length")
    assert "**Rubric (2 points):**" in items[0].rubric and items[1].question == TASK and items[1].rubric == ""
    assert manual_answers(grading_solution(manual=True)) == [("nb02-why-count", 2.0), ("nb02-plot-task", 1.0)]


def _submission(answer: str | None = ANSWER_TEXT, task_work: str | None = "plt.bar([1, 2], [4, 2])"):
    nb = make_student_notebook(grading_solution(manual=True))
    for index, cell in enumerate(list(nb.cells)):
        grade_id = nbgrader_meta(cell).get("grade_id")
        if grade_id in ANSWERS:
            cell.source = ANSWERS[grade_id]
        if grade_id == "nb02-why-count" and answer is not None:
            cell.source = answer
        if grade_id == "nb02-plot-task" and task_work is not None:
            import nbformat

            nb.cells.insert(index + 1, nbformat.v4.new_code_cell(task_work))
    return nb


def test_student_answers_match_by_grade_id_and_tasks_take_the_cells_after_them():
    items = manual_items(grading_solution(manual=True))
    answer, task = student_answers(items, _submission())
    assert answer.text == ANSWER_TEXT and answer.answered
    assert task.text == "```python\nplt.bar([1, 2], [4, 2])\n```" and task.answered
    blank, no_work = student_answers(items, _submission(answer=None, task_work=None))
    assert blank.text == "YOUR ANSWER HERE" and not blank.answered and not no_work.answered
    deleted = copy.deepcopy(_submission())
    deleted.cells = [cell for cell in deleted.cells if nbgrader_meta(cell).get("grade_id") != "nb02-why-count"]
    assert student_answers(items, deleted)[0].text is None


# --- grading, marking, merging ----------------------------------------------------------------------------------


@pytest.fixture
def graded(tmp_path):
    """An assignment with two hand-graded items, graded for an answering, a blank and an unreadable submission."""
    solution = tmp_path / "solutions" / GRADING_NAME
    solution.parent.mkdir()
    write_notebook(grading_solution(manual=True), solution)
    subs = tmp_path / "subs"
    subs.mkdir()
    write_notebook(_submission(), subs / "ann.ipynb")
    write_notebook(_submission(answer=None, task_work=None), subs / "bo.ipynb")
    (subs / "cy.ipynb").write_text("{not json")
    out = tmp_path / "out"
    grade_submissions(solution, subs, out, run=False, check_timeout=60, log=None)
    return out


def _gradebook(out: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    with open(out / "gradebook.csv", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), {row["student"]: row for row in reader}


@pytest.mark.sandbox
def test_grading_lists_the_written_answers_per_student_and_keeps_the_points_apart(graded):
    columns, rows = _gradebook(graded)
    assert columns == ["student", "nb02-word-count", "nb02-squares", "nb02-initials", "auto", "auto_max",
                       "nb02-why-count", "nb02-plot-task", "manual", "manual_max", "total", "max", "run", "notes", "sandbox"]
    assert (rows["ann"]["auto"], rows["ann"]["auto_max"], rows["ann"]["manual_max"]) == ("4", "4", "3")
    assert (rows["ann"]["nb02-why-count"], rows["ann"]["total"], rows["ann"]["max"]) == ("", "4", "7")
    assert rows["ann"]["notes"] == "2 written answers not marked yet"
    sheet = (graded / "manual" / "ann.md").read_text(encoding="utf-8")
    for part in ("## `nb02-why-count` (written answer, 2 points)", "> Say in two sentences why we count words.",
                 "**Model answer and rubric** (not shown to students)", "> **Rubric (2 points):**", ANSWER_TEXT,
                 "## `nb02-plot-task` (task, 1 points)", "plt.bar([1, 2], [4, 2])"):
        assert part in sheet, part
    assert f"_{NOT_ANSWERED}_" in (graded / "manual" / "bo.md").read_text(encoding="utf-8")
    marks = (graded / "manual" / "marks.csv").read_text(encoding="utf-8").splitlines()
    assert marks[0] == "student,grade_id,points,max_points,comment"
    assert "ann,nb02-why-count,,2," in marks and f"bo,nb02-why-count,0,2,{NOT_ANSWERED}" in marks
    assert any(line.startswith("cy,nb02-why-count,0,2,") and "not valid JSON" in line for line in marks)
    feedback = (graded / "feedback" / "ann.md").read_text(encoding="utf-8")
    assert "Written answers are graded by hand: `nb02-why-count` (2 points), `nb02-plot-task` (1 points)." in feedback


def _fill(out: Path, marks: dict[tuple[str, str], tuple[str, str]]) -> Path:
    path = out / "manual" / "marks.csv"
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    for row in rows:
        if (row["student"], row["grade_id"]) in marks:
            row["points"], row["comment"] = marks[(row["student"], row["grade_id"])]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


@pytest.mark.sandbox
def test_merge_manual_writes_the_marks_into_the_gradebook_and_the_feedback(graded, capsys):
    _fill(graded, {("ann", "nb02-why-count"): ("1.5", "names the unit, no use"), ("ann", "nb02-plot-task"): ("1", "")})
    assert main(["grade", "merge-manual", str(graded)]) == 0
    assert "merged 6 marks" in capsys.readouterr().out
    _, rows = _gradebook(graded)
    assert (rows["ann"]["nb02-why-count"], rows["ann"]["nb02-plot-task"], rows["ann"]["manual"]) == ("1.5", "1", "2.5")
    assert (rows["ann"]["auto"], rows["ann"]["total"], rows["ann"]["max"], rows["ann"]["notes"]) == ("4", "6.5", "7", "")
    assert (rows["bo"]["manual"], rows["bo"]["total"], rows["bo"]["notes"]) == ("0", "4", "")  # unanswered: 0
    feedback = (graded / "feedback" / "ann.md").read_text(encoding="utf-8")
    assert feedback.startswith("# 02_grading.ipynb: feedback for ann\n\n**Score: 4 / 4 points**")
    assert "| `nb02-why-count` | 1.5 / 2 | names the unit, no use |" in feedback
    assert "**Written answers: 2.5 / 3 points.**" in feedback

    # Marking again replaces the earlier marks; a blank mark is reported, not counted.
    _fill(graded, {("ann", "nb02-why-count"): ("2", "regraded"), ("ann", "nb02-plot-task"): ("", "")})
    assert main(["grade", "merge-manual", str(graded)]) == 0
    assert "1 written answers are not marked yet" in capsys.readouterr().out
    _, rows = _gradebook(graded)
    assert (rows["ann"]["manual"], rows["ann"]["total"]) == ("2", "6")
    assert rows["ann"]["notes"] == "1 written answer not marked yet"
    feedback = (graded / "feedback" / "ann.md").read_text(encoding="utf-8")
    assert feedback.count(FEEDBACK_HEADING) == 1 and "| `nb02-plot-task` | not marked yet / 1 |" in feedback


@pytest.mark.parametrize(("text", "problem"), [
    ("student,grade_id,points\nann,nb02-why-count,3\n", "3 points is outside 0..2"),
    ("student,grade_id,points\nann,nb02-why-count,-1\n", "outside 0..2"),
    ("student,grade_id,points\nann,nb02-why-count,lots\n", "'lots' is not a number"),
    ("student,grade_id,points\nzed,nb02-why-count,1\n", "no student 'zed'"),
    ("student,grade_id,points\nann,nb02-squares,1\n", "'nb02-squares' is not a written answer"),
    ("student,grade_id,points\nann,nb02-why-count,1\nann,nb02-why-count,2\n", "line 3 (ann, nb02-why-count): a second"),
    ("name,mark\nann,1\n", "needs the columns student, grade_id, points"),
])
def test_read_marks_names_every_line_to_fix(text, problem):
    items = manual_items(grading_solution(manual=True))
    with pytest.raises(MarkingError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        read_marks(text, items, ["ann", "bo"])


@pytest.mark.sandbox
def test_a_wrong_marks_file_changes_nothing(graded, capsys):
    before = (graded / "gradebook.csv").read_text(encoding="utf-8")
    bad = graded / "bad.csv"
    bad.write_text("student,grade_id,points\nann,nb02-why-count,9\n", encoding="utf-8")
    assert main(["grade", "merge-manual", str(graded), str(bad)]) == 2
    assert "9 points is outside 0..2" in capsys.readouterr().err
    assert (graded / "gradebook.csv").read_text(encoding="utf-8") == before


def test_merge_manual_without_written_answers_says_so(tmp_path, capsys):
    assert main(["grade", "merge-manual", str(tmp_path)]) == 2
    assert "grade the assignment first" in capsys.readouterr().err


# --- the real notebooks -------------------------------------------------------------------------------------------

EXPERIMENT_TITLE = re.compile(r"\bExperiment \((easy|medium|hard)\)")
NOTEBOOKS = [pytest.param(path, id=path.name[:2]) for path in solution_notebooks(paths.solutions_dir())]


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_every_notebook_has_a_tiered_experiment_and_a_written_answer(path):
    solution = read_notebook(path)
    titles = exercise_titles(solution)
    levels = [match.group(1) for title in titles.values() if (match := EXPERIMENT_TITLE.search(title))]
    assert levels, f"{path.name}: no exercise titled 'Experiment (easy|medium|hard)'"
    assert [item for item in manual_items(solution) if item.kind == "answer" and item.rubric], \
        f"{path.name}: no written answer with a rubric"
