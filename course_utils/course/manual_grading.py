"""Written answers graded by hand: list them per student for marking, then merge the marks into the gradebook.

A notebook's hand-graded items use nbgrader's metadata (schema 3), so nbgrader's formgrader reads them too:

* a **written answer** is a markdown cell ``{"grade": true, "solution": true, "task": false, "points": N}`` whose
  solution region holds the model answer and the rubric (the release turns it into ``YOUR ANSWER HERE``); the
  question is the markdown cell just before it;
* a **task** is a read-only markdown cell ``{"task": true, "grade": false, "solution": false, "locked": true,
  "points": N}`` that asks for work in the cells after it, up to the next heading (what the marker reads).

``python -m course_utils grade`` writes, beside the gradebook, ``manual/<student>.md`` (each question, its rubric,
the student's answer and the output just above it), ``manual/marks.csv`` (one row per student and item, unanswered
ones already at 0) and ``manual/items.json``. The instructor fills in ``points`` (and ``comment``) and runs
``python -m course_utils grade merge-manual OUT_DIR``, which checks every mark and writes the gradebook's manual
columns, totals and the feedback's written-answers section. Automatic and manual points stay in separate columns.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nbformat import NotebookNode

from course_utils.course.release import ANSWER_STUB, find_regions, nbgrader_meta

MARKS_FILE = "marks.csv"
ITEMS_FILE = "items.json"
MARKS_COLUMNS = ("student", "grade_id", "points", "max_points", "comment")
FEEDBACK_HEADING = "## Written answers (graded by hand)"
NOT_ANSWERED = "not answered"
_CONTEXT_LINES = 30  # lines of the output above an answer shown to the marker


class MarkingError(ValueError):
    """The marks file cannot be merged as it is (the message lists every line to fix)."""


@dataclass(frozen=True)
class ManualItem:
    """One hand-graded item of a solution notebook: a written answer or a task."""

    grade_id: str
    kind: str  # "answer" or "task"
    points: float
    question: str
    rubric: str = ""


@dataclass(frozen=True)
class ManualAnswer:
    """What one student handed in for one item, and the output just above it in the executed notebook."""

    grade_id: str
    text: str | None  # None: the cell is gone
    context: str = ""

    @property
    def answered(self) -> bool:
        """False when the cell is missing, empty or still the release's ``YOUR ANSWER HERE``."""
        return bool(self.text and self.text.strip() and self.text.strip() != ANSWER_STUB)


# ---------------------------------------------------------------------------------------------------------------
# Reading the items and the answers


def is_manual_answer(cell: NotebookNode) -> bool:
    """A written answer graded by hand: a markdown solution cell that is also graded."""
    meta = nbgrader_meta(cell)
    return cell.cell_type == "markdown" and bool(meta.get("solution")) and bool(meta.get("grade"))


def is_task(cell: NotebookNode) -> bool:
    """An nbgrader task cell (a markdown cell asking for work graded by hand)."""
    return bool(nbgrader_meta(cell).get("task"))


def _solution_text(source: str) -> str:
    lines = source.split("\n")
    return "\n".join(
        "\n".join(lines[region.begin + 1 : region.end]) for region in find_regions(source) if region.kind == "solution"
    ).strip()


def _outside_solution(source: str) -> str:
    lines = source.split("\n")
    hidden = {n for region in find_regions(source) if region.kind == "solution"
              for n in range(region.begin, region.end + 1)}
    return "\n".join(line for n, line in enumerate(lines) if n not in hidden).strip()


def manual_items(solution: NotebookNode) -> list[ManualItem]:
    """The written answers and tasks of a solution notebook, in order, with their questions and rubrics."""
    items = []
    for index, cell in enumerate(solution.cells):
        meta = nbgrader_meta(cell)
        points = float(meta.get("points", 0) or 0)
        if is_manual_answer(cell):
            before = solution.cells[index - 1] if index else None
            asked = _outside_solution(cell.source)
            if before is not None and before.cell_type == "markdown" and not nbgrader_meta(before):
                asked = "\n\n".join(part for part in (before.source.strip(), asked) if part)
            items.append(ManualItem(str(meta.get("grade_id")), "answer", points, asked, _solution_text(cell.source)))
        elif is_task(cell):
            items.append(ManualItem(str(meta.get("grade_id")), "task", points, cell.source.strip()))
    return items


def _output_text(cell: NotebookNode) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(_joined(output.get("text", "")))
        elif output.get("output_type") in ("execute_result", "display_data"):
            data = output.get("data", {})
            parts.append(_joined(data.get("text/markdown") or data.get("text/plain", "")))
        elif output.get("output_type") == "error":
            parts.append(f"{output.get('ename')}: {output.get('evalue')}")
    lines = "".join(part if part.endswith("\n") else part + "\n" for part in parts if part).rstrip().split("\n")
    if len(lines) > _CONTEXT_LINES:
        lines = [*lines[:_CONTEXT_LINES], f"... ({len(lines) - _CONTEXT_LINES} more lines)"]
    return "\n".join(lines).strip()


def _joined(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def student_answers(items: Sequence[ManualItem], student: NotebookNode | None,
                    executed: NotebookNode | None = None) -> list[ManualAnswer]:
    """Each item's answer in the student's notebook (matched by grade_id), with the output above it when run.

    For a task, the answer is the cells after the task cell up to the next nbgrader cell or markdown heading
    (where students work).
    """
    found: dict[str, ManualAnswer] = {}
    cells = student.cells if student is not None else []
    wanted = {item.grade_id: item for item in items}
    for index, cell in enumerate(cells):
        grade_id = nbgrader_meta(cell).get("grade_id")
        item = wanted.get(grade_id)
        if item is None:
            continue
        if item.kind == "answer":
            text = cell.source
        else:
            following = []
            for later in cells[index + 1 :]:
                if nbgrader_meta(later) or (later.cell_type == "markdown" and later.source.lstrip().startswith("#")):
                    break  # the next exercise or section
                following.append(f"```python\n{later.source}\n```" if later.cell_type == "code" else later.source)
            text = "\n\n".join(part for part in following if part.strip())
        found[grade_id] = ManualAnswer(grade_id, text, _context(executed, grade_id))
    return [found.get(item.grade_id, ManualAnswer(item.grade_id, None)) for item in items]


def _context(executed: NotebookNode | None, grade_id: str) -> str:
    """The text output of the last code cell before ``grade_id``'s cell in the executed notebook."""
    if executed is None:
        return ""
    for index, cell in enumerate(executed.cells):
        if nbgrader_meta(cell).get("grade_id") == grade_id:
            for earlier in reversed(executed.cells[:index]):
                if earlier.cell_type == "code":
                    return _output_text(earlier)
            return ""
    return ""


# ---------------------------------------------------------------------------------------------------------------
# Writing the marking files


def marking_sheet(student: str, items: Sequence[ManualItem], answers: Sequence[ManualAnswer],
                  assignment: str, problem: str = "") -> str:
    """The Markdown a marker reads for one student: question, rubric, the student's answer, output above it."""
    lines = [f"# {assignment}: written answers of {student}", ""]
    if problem:
        lines += [f"The submission could not be graded ({problem}): every item is at 0 in {MARKS_FILE}.", ""]
    for item, answer in zip(items, answers):
        kind = "written answer" if item.kind == "answer" else "task"
        lines += [f"## `{item.grade_id}` ({kind}, {_points(item.points)} points)", "", "**Question**", "",
                  _quoted(item.question), ""]
        if item.rubric:
            lines += ["**Model answer and rubric** (not shown to students)", "", _quoted(item.rubric), ""]
        if answer.context:
            lines += ["**Output just above the answer** (the student's own run)", "", "```text", answer.context,
                      "```", ""]
        lines += ["**Answer**", "", answer.text.strip() if answer.answered else f"_{NOT_ANSWERED}_", ""]
    return "\n".join(lines).rstrip() + "\n"


def _quoted(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.strip().split("\n"))


def marks_template(rows: Iterable[tuple[str, Sequence[ManualAnswer], str]], items: Sequence[ManualItem]) -> str:
    """``marks.csv`` to fill in: one row per student and item; unanswered items (and unreadable submissions) at 0."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MARKS_COLUMNS)
    for student, answers, problem in rows:
        by_id = {answer.grade_id: answer for answer in answers}
        for item in items:
            answer = by_id.get(item.grade_id)
            if problem:
                writer.writerow([student, item.grade_id, "0", _points(item.points), problem])
            elif answer is None or not answer.answered:
                writer.writerow([student, item.grade_id, "0", _points(item.points), NOT_ANSWERED])
            else:
                writer.writerow([student, item.grade_id, "", _points(item.points), ""])
    return buffer.getvalue()


def write_marking_files(out_dir: Path, students: Sequence[tuple[str, Sequence[ManualAnswer], str]],
                        items: Sequence[ManualItem], assignment: str) -> None:
    """Write ``manual/<student>.md``, ``manual/marks.csv`` and ``manual/items.json`` into ``out_dir``."""
    folder = Path(out_dir) / "manual"
    folder.mkdir(parents=True, exist_ok=True)
    for student, answers, problem in students:
        sheet = marking_sheet(student, items, answers, assignment, problem)
        (folder / f"{student}.md").write_text(sheet, encoding="utf-8")
    (folder / MARKS_FILE).write_text(marks_template(students, items), encoding="utf-8", newline="")
    (folder / ITEMS_FILE).write_text(json.dumps([asdict(item) for item in items], indent=1) + "\n",
                                     encoding="utf-8")


def read_items(out_dir: Path) -> list[ManualItem]:
    """The items a graded folder was written with (``manual/items.json``)."""
    path = Path(out_dir) / "manual" / ITEMS_FILE
    if not path.exists():
        raise MarkingError(f"{path} not found: grade the assignment first (python -m course_utils grade ...); "
                           "an assignment without written answers has nothing to merge.")
    return [ManualItem(**entry) for entry in json.loads(path.read_text(encoding="utf-8"))]


# ---------------------------------------------------------------------------------------------------------------
# Reading the marks and merging them


@dataclass(frozen=True)
class Mark:
    """The points (None: not marked yet) and comment one student got for one item."""

    student: str
    grade_id: str
    points: float | None
    comment: str = ""


def read_marks(text: str, items: Sequence[ManualItem], students: Sequence[str]) -> list[Mark]:
    """The marks in a filled-in ``marks.csv``; raises MarkingError listing every line that is wrong."""
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    missing = [column for column in ("student", "grade_id", "points") if rows and column not in rows[0]]
    if missing or not rows:
        raise MarkingError(f"the marks file needs the columns {', '.join(MARKS_COLUMNS[:3])} (and may have "
                           f"{', '.join(MARKS_COLUMNS[3:])}); found {', '.join(rows[0]) if rows else 'no rows'}.")
    maxima = {item.grade_id: item.points for item in items}
    known = set(students)
    problems, marks, seen = [], [], set()
    for line, row in enumerate(rows, start=2):
        student, grade_id = (row.get("student") or "").strip(), (row.get("grade_id") or "").strip()
        text_points = (row.get("points") or "").strip().replace(",", ".")
        where = f"line {line} ({student or '?'}, {grade_id or '?'})"
        if student not in known:
            problems.append(f"{where}: no student {student!r} in the gradebook")
            continue
        if grade_id not in maxima:
            problems.append(f"{where}: {grade_id!r} is not a written answer of this assignment "
                            f"({', '.join(maxima)})")
            continue
        if (student, grade_id) in seen:
            problems.append(f"{where}: a second mark for the same student and item; keep one")
            continue
        seen.add((student, grade_id))
        points = None
        if text_points:
            try:
                points = float(text_points)
            except ValueError:
                problems.append(f"{where}: points {text_points!r} is not a number")
                continue
            if not math.isfinite(points) or not 0 <= points <= maxima[grade_id]:
                problems.append(f"{where}: {text_points} points is outside 0..{_points(maxima[grade_id])}")
                continue
        marks.append(Mark(student, grade_id, points, (row.get("comment") or "").strip()))
    if problems:
        raise MarkingError("fix the marks file and merge again:\n  " + "\n  ".join(problems))
    return marks


def merge_into_gradebook(rows: list[dict[str, str]], marks: Sequence[Mark],
                         items: Sequence[ManualItem]) -> list[dict[str, str]]:
    """The gradebook rows with the marks written into the manual columns, the manual total and the total."""
    by_key = {(mark.student, mark.grade_id): mark for mark in marks}
    merged = []
    for row in rows:
        row = dict(row)
        marked = [by_key.get((row["student"], item.grade_id)) for item in items]
        for item, mark in zip(items, marked):
            row[item.grade_id] = _points(mark.points) if mark is not None and mark.points is not None else ""
        manual = sum(mark.points for mark in marked if mark is not None and mark.points is not None)
        unmarked = sum(1 for mark in marked if mark is None or mark.points is None)
        row["manual"] = _points(manual)
        row["total"] = _points(float(row.get("auto") or 0) + manual)
        notes = [note for note in (row.get("notes") or "").split("; ") if note and not _UNMARKED.match(note)]
        if unmarked:
            notes.append(unmarked_note(unmarked))
        row["notes"] = "; ".join(notes)
        merged.append(row)
    return merged


_UNMARKED = re.compile(r"^\d+ written answers? not marked yet$")


def unmarked_note(count: int) -> str:
    """The gradebook note for items still waiting for a mark."""
    return f"{count} written answer{'s' if count != 1 else ''} not marked yet"


def feedback_section(marks: Sequence[Mark], items: Sequence[ManualItem], student: str) -> str:
    """The feedback's section with the hand-graded points and the marker's comments."""
    by_id = {mark.grade_id: mark for mark in marks if mark.student == student}
    lines = [FEEDBACK_HEADING, "", "| written answer | points | comment |", "| --- | ---: | --- |"]
    total = 0.0
    for item in items:
        mark = by_id.get(item.grade_id)
        got = "not marked yet" if mark is None or mark.points is None else _points(mark.points)
        total += mark.points if mark is not None and mark.points is not None else 0.0
        comment = (mark.comment if mark is not None else "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{item.grade_id}` | {got} / {_points(item.points)} | {comment} |")
    maximum = sum(item.points for item in items)
    lines += ["", f"**Written answers: {_points(total)} / {_points(maximum)} points.**"]
    return "\n".join(lines) + "\n"


def with_feedback_section(feedback: str, section: str) -> str:
    """``feedback`` with its written-answers section replaced by ``section`` (or added at the end)."""
    head = feedback.split(FEEDBACK_HEADING, 1)[0].rstrip()
    return f"{head}\n\n{section}"


def merge_marks(out_dir: Path, marks_file: Path | None = None) -> tuple[int, int]:
    """Merge ``marks_file`` (default ``OUT_DIR/manual/marks.csv``) into the gradebook and feedback of ``out_dir``.

    Returns (marks merged, items still unmarked). Nothing is written when a mark is wrong (MarkingError).
    """
    out_dir = Path(out_dir)
    items = read_items(out_dir)
    gradebook = out_dir / "gradebook.csv"
    with open(gradebook, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        columns, rows = list(reader.fieldnames or []), list(reader)
    marks_path = Path(marks_file) if marks_file is not None else out_dir / "manual" / MARKS_FILE
    if not marks_path.exists():
        raise MarkingError(f"{marks_path} not found: give the marks file you filled in.")
    marks = read_marks(marks_path.read_text(encoding="utf-8"), items, [row["student"] for row in rows])
    merged = merge_into_gradebook(rows, marks, items)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(merged)
    gradebook.write_text(buffer.getvalue(), encoding="utf-8", newline="")
    for row in merged:
        path = out_dir / "feedback" / f"{row['student']}.md"
        if path.exists():
            section = feedback_section(marks, items, row["student"])
            path.write_text(with_feedback_section(path.read_text(encoding="utf-8"), section), encoding="utf-8")
    given = sum(1 for mark in marks if mark.points is not None)
    return given, len(rows) * len(items) - given


def manual_columns(items: Sequence[ManualItem]) -> list[str]:
    """The gradebook columns of the hand-graded items, their total and its maximum."""
    return [*(item.grade_id for item in items), "manual", "manual_max"]


def _points(value: float) -> str:
    return f"{value:g}"
