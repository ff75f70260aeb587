"""The subprocess behind :func:`course_utils.exercises.evaluate`: run imports, exercise and check in one namespace.

Usage: ``python -m course_utils._exercise_runner JOB.json``. The job names the three sources and the file where
the outcome goes (``{"passed": bool, "message": str}``); stdout and stderr are the caller's to keep.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

NOT_WRITTEN = "not written yet: replace `raise NotImplementedError()` in the exercise cell with your code."


def run_cells(cells: list[tuple[str, str]]) -> tuple[bool, str]:
    """Execute the named sources in order in one fresh namespace; the outcome and the message to show."""
    from course_utils.checks import CheckFailed

    namespace: dict[str, object] = {"__name__": "__main__"}
    sources = dict(cells)
    for stage, source in cells:
        try:
            exec(compile(source, f"<{stage} cell>", "exec"), namespace)  # noqa: S102 - running it is the point
        except CheckFailed as exc:
            return False, str(exc) or "the check failed"
        except NotImplementedError:
            return False, NOT_WRITTEN
        except SyntaxError as exc:
            return False, f"SyntaxError in the {stage} cell, line {exc.lineno}: {exc.msg}"
        except BaseException as exc:  # noqa: BLE001 - SystemExit and friends are failures too
            return False, _describe(exc, stage, sources)
    return True, "passed"


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
    passed, message = run_cells([(stage, source) for stage, source in job["cells"]])
    sys.stdout.flush()
    Path(job["result"]).write_text(json.dumps({"passed": passed, "message": message}), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
