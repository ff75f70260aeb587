"""Exercises as data: read them from a notebook, and run one (imports + answer + check) in a fresh subprocess.

An exercise is a solution cell followed by its check cell (see ``solutions/README.md``). :func:`evaluate` never runs
the answer in the caller's process: it starts ``python -m course_utils.course._exercise_runner`` in a temporary folder,
with a time limit, and reads back what happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from nbformat import NotebookNode

from course_utils.course.memory_watch import MemoryWatch
from course_utils.course.release import (
    cell_tags,
    nbgrader_meta,
    read_notebook,
    student_source,
    visible_source,
)
from course_utils.course.sandbox import Sandbox, start_process
from course_utils.ground import paths


@dataclass(frozen=True)
class Exercise:
    """One exercise: the solution cell, its stub as released, and the check cell with and without hidden tests."""

    notebook: str
    grade_id: str
    check_grade_id: str
    points: float
    solution_source: str
    stub_source: str
    check_source: str
    visible_check_source: str


@dataclass(frozen=True)
class ExerciseNotebook:
    """The exercises of one notebook and the source of its ``imports`` cells, which every check runs first."""

    name: str
    imports_source: str
    exercises: list[Exercise] = field(default_factory=list)

    def by_grade_id(self) -> dict[str, Exercise]:
        """The exercises keyed by the solution cell's grade_id."""
        return {exercise.grade_id: exercise for exercise in self.exercises}


@dataclass(frozen=True)
class Result:
    """What happened when an exercise was checked: passed or not, the message to show, the time it took.

    ``kind`` is ``passed``, ``failed`` (the check or a hidden test), ``not-written``, ``delegated`` (the answer
    called the workbook's own implementation), ``syntax-error``, ``error`` (something else was raised),
    ``timeout``, ``output`` (it printed more than :data:`OUTPUT_LIMIT`) or ``died`` (the process stopped without
    reporting); ``stage``
    (``imports``, ``exercise`` or ``check``) and ``line`` (1-based, in that cell) say where it stopped.
    """

    passed: bool
    message: str
    seconds: float
    output: str = ""
    kind: str = ""
    stage: str = ""
    line: int | None = None


@dataclass(frozen=True)
class Grade:
    """The points one student earned on one exercise, with the check's result."""

    grade_id: str
    points: float
    max_points: float
    result: Result


def imports_source(nb: NotebookNode) -> str:
    """The source of the cells tagged ``imports``, joined in order."""
    return "\n\n".join(
        cell.source for cell in nb.cells if cell.cell_type == "code" and "imports" in cell_tags(cell)
    )


def parse_exercises(nb: NotebookNode, name: str = "") -> ExerciseNotebook:
    """The exercises of a solution or student notebook: each code solution cell directly followed by a check cell."""
    exercises = []
    for cell, check in zip(nb.cells, nb.cells[1:]):
        meta, check_meta = nbgrader_meta(cell), nbgrader_meta(check)
        if not (
            cell.cell_type == "code"
            and meta.get("solution")
            and check.cell_type == "code"
            and check_meta.get("grade")
            and not check_meta.get("solution")
        ):
            continue
        exercises.append(
            Exercise(
                notebook=name,
                grade_id=str(meta.get("grade_id", "")),
                check_grade_id=str(check_meta.get("grade_id", "")),
                points=float(check_meta.get("points", 0) or 0),
                solution_source=cell.source,
                stub_source=student_source(cell.source, "code"),
                check_source=check.source,
                visible_check_source=visible_source(check.source),
            )
        )
    return ExerciseNotebook(name=name, imports_source=imports_source(nb), exercises=exercises)


def load_exercises(path: Path | str) -> ExerciseNotebook:
    """:func:`parse_exercises` of the notebook at ``path``."""
    path = Path(path)
    return parse_exercises(read_notebook(path), path.name)


def student_answers(student: NotebookNode | Path | str, grade_ids: list[str]) -> dict[str, str | None]:
    """The student's own source for each ``grade_id``, matched by nbgrader metadata; None where the cell is gone.

    When a student duplicated a cell, the last copy counts (it is the one they most likely ran last).
    """
    nb = student if isinstance(student, NotebookNode) else read_notebook(Path(student))
    found: dict[str, str] = {}
    for cell in nb.cells:
        grade_id = nbgrader_meta(cell).get("grade_id")
        if cell.cell_type == "code" and grade_id in grade_ids:
            found[grade_id] = cell.source
    return {grade_id: found.get(grade_id) for grade_id in grade_ids}


def grade(student: NotebookNode | Path | str, solution: Path | str, *, timeout: float = 60) -> list[Grade]:
    """Grade a student's notebook against the solution's checks (hidden tests included) and imports."""
    reference = load_exercises(solution)
    answers = student_answers(student, [exercise.grade_id for exercise in reference.exercises])
    grades = []
    for exercise in reference.exercises:
        answer = answers[exercise.grade_id]
        if answer is None:
            result = Result(False, f"cell {exercise.grade_id!r} is missing from the notebook (deleted?)", 0.0)
        else:
            result = evaluate(reference.imports_source, answer, exercise.check_source, timeout=timeout)
        grades.append(
            Grade(exercise.grade_id, exercise.points if result.passed else 0.0, exercise.points, result)
        )
    return grades


def evaluate(
    imports_source: str,
    exercise_source: str,
    check_source: str,
    *,
    timeout: float = 60,
    workdir: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    sandbox: Sandbox | None = None,
) -> Result:
    """Run imports, exercise and check in a fresh Python subprocess (in ``workdir`` or a temporary folder).

    ``env`` is the environment the subprocess starts from (default: this process's); the package stays importable.
    With a ``sandbox`` (:mod:`course_utils.course.sandbox`) the subprocess runs in a box of its own, where only ``workdir``
    is writable. Its output is kept in files; more than :data:`OUTPUT_LIMIT` bytes of it fails the exercise.
    """
    with tempfile.TemporaryDirectory(prefix="course-exercise-") as scratch:
        scratch_dir = Path(scratch)
        cwd = Path(workdir) if workdir is not None else scratch_dir / "work"
        cwd.mkdir(parents=True, exist_ok=True)
        job = scratch_dir / "job.json"
        outcome = scratch_dir / "result.json"
        job.write_text(
            json.dumps(
                {
                    "cells": [
                        ["imports", imports_source],
                        ["exercise", exercise_source],
                        ["check", check_source],
                    ],
                    "result": str(outcome),
                }
            ),
            encoding="utf-8",
        )
        command = [sys.executable, "-m", "course_utils.course._exercise_runner", str(job)]
        start = time.perf_counter()
        with open(scratch_dir / "stdout.txt", "wb") as out, open(scratch_dir / "stderr.txt", "wb") as err:
            process = start_process(
                command,
                cwd=cwd,
                env=_child_env(env),
                sandbox=sandbox,
                writable=[scratch_dir, cwd],
                readonly=[job],
                stdout=out,
                stderr=err,
            )
            watch = sandbox.memory_watch() if sandbox is not None else None
            timed_out = wait_or_kill(process, timeout, watch)
        seconds = time.perf_counter() - start
        stdout, printed = _read_output(scratch_dir / "stdout.txt")
        stderr, printed_err = _read_output(scratch_dir / "stderr.txt")
        if watch is not None and watch.exceeded:
            return Result(False, f"stopped: {watch.reason()}", seconds, stdout, kind="memory")
        if timed_out:
            return Result(
                False,
                f"timed out after {timeout:g} s: look for an endless loop, or make the work smaller",
                seconds,
                stdout,
                kind="timeout",
            )
        if printed + printed_err > OUTPUT_LIMIT:
            return Result(
                False,
                f"printed {printed + printed_err:,} bytes, more than the {OUTPUT_LIMIT:,} an exercise may print: "
                "print less (a summary, or the first few items)",
                seconds,
                stdout,
                kind="output",
            )
        if not outcome.exists():
            tail = "\n".join(stderr.strip().splitlines()[-5:])
            message = (
                f"the check process stopped (exit code {process.returncode}) before reporting a "
                f"result{': ' + tail if tail else ''}"
            )
            return Result(False, _explain(sandbox, message), seconds, stdout, kind="died")
        try:
            report = json.loads(outcome.read_text(encoding="utf-8"))
            passed, message = bool(report["passed"]), str(report["message"])
        except (OSError, ValueError, KeyError, TypeError):
            message = "the check process left a damaged report (did the code overwrite the grader's files?)"
            return Result(False, message, seconds, stdout, kind="died")
        return Result(
            passed,
            _explain(sandbox, message),
            seconds,
            stdout,
            kind=str(report.get("kind", "")),
            stage=str(report.get("stage", "")),
            line=report.get("line"),
        )


OUTPUT_LIMIT = 8 * 2**20  # bytes an exercise may print (stdout and stderr together)
_KEPT_OUTPUT = 2**20  # the first bytes of the output kept in Result.output


def _read_output(path: Path) -> tuple[str, int]:
    """The first bytes of an output file as text, and how many bytes it had in all."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            return f.read(_KEPT_OUTPUT).decode("utf-8", errors="replace"), size
    except OSError:
        return "", 0


def _explain(sandbox: Sandbox | None, message: str) -> str:
    return sandbox.explain(message) if sandbox is not None else message


def _child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(paths.REPO_ROOT), env.get("PYTHONPATH", "")]))
    env["PYTHONIOENCODING"] = "utf-8"
    env.setdefault("MPLBACKEND", "Agg")
    env.pop("COURSE_FIGURES_FILE", None)  # an exercise never writes into the run summary
    return env


def wait_or_kill(process: subprocess.Popen, timeout: float, watch: MemoryWatch | None = None) -> bool:
    """Wait for ``process``; past ``timeout`` seconds (or on Ctrl-C) kill it and all it started. True if timed out.

    With a ``watch``, the tree is also killed once all its processes together use more memory than the watch's
    limit (then ``watch.exceeded`` is true).
    """
    if watch is not None:
        watch.start(process, kill_tree)
    try:
        process.wait(timeout=timeout)
        return False
    except subprocess.TimeoutExpired:
        kill_tree(process)
        return True
    except BaseException:  # Ctrl-C: never leave the student's code running
        kill_tree(process)
        raise
    finally:
        if watch is not None:
            watch.stop()


def kill_tree(process: subprocess.Popen) -> None:
    """Kill ``process`` and every process it started, including Jupyter kernels (which run in their own session)."""
    victims = []
    try:
        parent = psutil.Process(process.pid)
        victims = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:  # it has already gone
        pass
    for victim in victims:
        with contextlib.suppress(Exception):  # it may have ended meanwhile
            victim.kill()
    try:
        if os.name == "posix":
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()
