"""The subprocess behind :func:`course_utils.course.exercises.evaluate`: run imports, exercise and check in one namespace.

Usage: ``python -m course_utils.course._exercise_runner JOB.json``. The job names the three sources and the file where
the outcome goes (``{"passed": bool, "message": str, "kind": str, "stage": str, "line": int | None}``); stdout and
stderr are the caller's to keep. ``kind`` is one of :data:`KINDS`; ``stage`` and ``line`` say where it stopped (the
line of that cell's own code, 1-based, so a grader can tell a hidden test from the visible check).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

NOT_WRITTEN = "not written yet: replace `raise NotImplementedError()` in the exercise cell with your code."


# What stopped the cells: the check passed, the check (or a hidden test) failed, the stub is untouched, the answer
# called the workbook's own implementation, the code does not parse, or something else was raised.
KINDS = ("passed", "failed", "not-written", "delegated", "syntax-error", "error")


@dataclass(frozen=True)
class Outcome:
    """How the cells ran: passed or not, the message, the kind of failure and where it happened."""

    passed: bool
    message: str
    kind: str
    stage: str = ""
    line: int | None = None


def run_cells(cells: list[tuple[str, str]]) -> tuple[bool, str]:
    """Execute the named sources in order in one fresh namespace; the outcome and the message to show."""
    outcome = run_cells_outcome(cells)
    return outcome.passed, outcome.message


def run_cells_outcome(cells: list[tuple[str, str]]) -> Outcome:
    """:func:`run_cells` with the kind of failure, the stage that raised and the line of that cell.

    From the exercise cell on, the references that the check cell's checks forbid are traps (see
    :mod:`course_utils.checks.traps`), and the functions the exercise cell defines arm them whenever they run, so a
    hidden test that calls the student's function directly is held to the same rule as the check.
    """
    with contextlib.ExitStack() as traps_in_place:
        return _run(cells, traps_in_place)


def _run(cells: list[tuple[str, str]], traps_in_place: contextlib.ExitStack) -> Outcome:
    from course_utils.checks import CheckFailed, traps

    namespace: dict[str, object] = {"__name__": "__main__"}
    sources = dict(cells)
    for stage, source in cells:
        filename = f"<{stage} cell>"
        if stage == "exercise":
            traps_in_place.enter_context(traps.forbid(traps.forbidden_by(sources.get("check", ""), namespace),
                                                      [namespace]))
        try:
            exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - running it is the point
        except SyntaxError as exc:
            if exc.filename != filename:  # raised by code the cell ran, not by compiling the cell
                return Outcome(False, _describe(exc, stage, sources), "error", stage, _line_in(exc, stage))
            return Outcome(
                False,
                f"SyntaxError in the {stage} cell, line {exc.lineno}: {exc.msg}",
                "syntax-error",
                stage,
                exc.lineno,
            )
        except BaseException as exc:  # noqa: BLE001 - SystemExit and friends are failures too
            line = _line_in(exc, stage)
            if isinstance(exc, NotImplementedError):
                return Outcome(False, NOT_WRITTEN, "not-written", stage, line)
            if isinstance(exc, CheckFailed) and isinstance(exc.__context__, NotImplementedError):  # checks.call
                return Outcome(False, str(exc) or NOT_WRITTEN, "not-written", stage, line)
            if isinstance(exc, traps.DelegationError):
                return Outcome(False, str(exc), "delegated", stage, line)
            if isinstance(exc, CheckFailed):
                return Outcome(False, str(exc) or "the check failed", "failed", stage, line)
            kind = "failed" if isinstance(exc, AssertionError) and stage == "check" else "error"
            return Outcome(False, _describe(exc, stage, sources), kind, stage, line)
        if stage == "exercise":
            traps.arm_functions_from(namespace, filename)
    return Outcome(True, "passed", "passed")


def _line_in(exc: BaseException, stage: str) -> int | None:
    """The line of the ``stage`` cell that was running when ``exc`` was raised (its outermost frame there)."""
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == f"<{stage} cell>":
            return frame.lineno
    return None


def _describe(exc: BaseException, stage: str, sources: dict[str, str]) -> str:
    """``Type: message`` plus the cell line where it happened (the innermost line inside a cell)."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.startswith("<") and frame.filename.endswith(" cell>"):
            cell = frame.filename[1 : -len(" cell>")]
            lines = sources.get(cell, "").split("\n")
            line = lines[frame.lineno - 1].strip() if frame.lineno and frame.lineno <= len(lines) else ""
            where = f" (in the {cell} cell, line {frame.lineno}: `{line}`)"
    return text + (where or f" (in the {stage} cell)")


def main(argv: list[str] | None = None) -> int:
    """Run the job file named in ``argv`` and write its outcome."""
    args = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    runner = os.getpid()
    outcome = run_cells_outcome([(stage, source) for stage, source in job["cells"]])
    if os.getpid() != runner:  # a process the student's code forked came back here: only the runner reports
        os._exit(0)
    sys.stdout.flush()
    result = Path(job["result"])
    partial = result.with_name(result.name + ".partial")
    partial.write_text(json.dumps(asdict(outcome)), encoding="utf-8")
    os.replace(partial, result)  # whoever reads it sees a whole report or none
    return 0


if __name__ == "__main__":
    sys.exit(main())
