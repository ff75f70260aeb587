"""The subprocess behind :func:`course_utils.course.grading.run_submission`: execute one notebook with papermill.

Usage: ``python -m course_utils.course._submission_runner JOB.json``. The job names the notebook, the executed copy to
write, the working folder, the papermill parameters and the per-cell time limit, and the file where the outcome
goes (``{"completed": bool, "error": str}``). The grader reads the executed copy to see which cell failed; the
whole-notebook time limit is the grader's (it kills this process and the kernel).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Run the job file named in ``argv`` and write its outcome; never raises for a failing notebook."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    args = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    completed, error = True, ""
    try:
        papermill.execute_notebook(
            job["notebook"],
            job["output"],
            parameters=job.get("parameters", {}),
            language="python",
            kernel_name="python3",
            cwd=job["cwd"],
            progress_bar=False,
            log_output=False,
            execution_timeout=job.get("cell_timeout"),
        )
    except PapermillExecutionError:
        pass  # a cell raised: every cell up to it ran and its error is in the executed copy
    except Exception as exc:  # noqa: BLE001 - a dead kernel, a cell timeout, an unreadable notebook
        lines = str(exc).strip().splitlines()
        completed, error = False, f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    Path(job["result"]).write_text(json.dumps({"completed": completed, "error": error}), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
