"""Grade a folder of student submissions against a solution notebook: gradebook CSV and one feedback file each.

``python -m course_utils grade 00 submissions/`` calls :func:`grade_submissions`. For every submission (a ``.ipynb``
file, or a folder, per student) it

1. reads the notebook (a file that is not valid JSON, or not a notebook, gets zero and that reason);
2. runs the whole notebook in a fresh kernel on the tiny profile with papermill, in a subprocess with a time limit,
   in the submission's own temporary folder (:func:`run_submission`): did "Restart & Run All" work?
3. grades each exercise on its own (:func:`grade_exercises`): the solution's imports cell, the student's cell and
   the solution's check cell *with its hidden tests* run in a fresh subprocess (:func:`course_utils.course.exercises.evaluate`).

Points come only from step 3, so a notebook that crashes or loops in one cell still earns the exercises that are
right; step 2 is reported beside them. Checks and hidden tests always come from the solution, never from the
submission. Student code never runs in this process, and never sees the grader's secrets (:func:`safe_environment`).
Every submission is read before any student code runs and the gradebook is written at the end, so one submission
cannot change what another is graded on. On Linux every process of a submission runs in a sandbox of its own
(:mod:`course_utils.course.sandbox`, bubblewrap): its own empty home and ``/tmp``, the workbook and the submission
read-only, no network, limits on memory, processes and file sizes. Where no sandbox works, grading refuses to start
unless the instructor passes ``--no-sandbox`` (:func:`submission_sandbox`); the gradebook says which it was.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from course_utils.course import manual_grading
from course_utils.course.exercises import (
    Exercise,
    ExerciseNotebook,
    Result,
    evaluate,
    parse_exercises,
    student_answers,
    wait_or_kill,
)
from course_utils.course.release import (
    RAISES_TAG,
    cell_tags,
    find_regions,
    nbgrader_meta,
    read_notebook,
    solution_notebooks,
)
from course_utils.course.sandbox import Sandbox, find_sandbox, start_process, unconfined
from course_utils.ground import paths

DEFAULT_TIMEOUT = 300.0  # seconds for the whole notebook
DEFAULT_CHECK_TIMEOUT = 60.0  # seconds for one exercise (imports + answer + check)
MAX_NOTEBOOK_BYTES = 100 * 2**20
PAPERMILL_TAGS = ("injected-parameters", "papermill-error-cell-tag")

# Why an exercise earned nothing (the feedback explains each).
PASSED = "passed"
WRONG = "wrong answer"
HIDDEN = "failed a hidden test"
NOT_WRITTEN = "not written"
DELEGATED = "calls the workbook's answer"
UNDEFINED = "function not defined"
SYNTAX = "syntax error"
CRASHED = "crashed"
TIMED_OUT = "timed out"
OVER_MEMORY = "used too much memory"
DELETED = "cell deleted"
GRADER_ERROR = "grader error"
TOO_MUCH_OUTPUT = "printed too much"
# Why a whole submission earned nothing.
NOT_JSON = "not valid JSON"
NOT_NOTEBOOK = "not a notebook"
NO_NOTEBOOK = "no notebook found"

_SECRET_WORDS = (
    "TOKEN",
    "SECRET",
    "PASS",
    "CREDENTIAL",
    "KEY",
    "AUTH",
    "COOKIE",
    "PRIVATE",
    "DSN",
    "DATABASE_URL",
)
_SECRET_PREFIXES = (
    "AWS_", "AZURE_", "GOOGLE_", "GCP_", "GCLOUD_", "KAGGLE_", "WANDB_", "OPENAI_", "ANTHROPIC_", "GITHUB_", "GH_",
    "GITLAB_", "JPY_", "JUPYTERHUB_", "SSH_", "GPG_", "NETRC",
)  # fmt: skip
_STUDENT_ID = re.compile(r"[^A-Za-z0-9._@+-]+")


class GradingError(ValueError):
    """The assignment or the submissions folder cannot be graded as given (the message says what to change)."""


# ---------------------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class ExerciseGrade:
    """The points a student earned on one exercise, why, and the check's message."""

    grade_id: str
    points: float
    max_points: float
    reason: str
    message: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.reason == PASSED


@dataclass(frozen=True)
class NotebookRun:
    """How the whole submitted notebook ran: ``ok``, ``error`` (a cell raised), ``timeout``, ``memory`` (stopped
    for using more memory than a whole submission may) or ``skipped``.

    ``cell`` is the 0-based index, in the submission, of the cell that raised or was running; ``failed_checks``
    counts check cells that raised, which "Run All" goes past (an unsolved exercise's check fails by design).
    """

    status: str
    seconds: float = 0.0
    cell: int | None = None
    first_line: str = ""
    error: str = ""
    failed_checks: int = 0
    memory_bytes: int = 0  # the largest resident memory of all its processes together (0: not watched)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def summary(self) -> str:
        """A few words for the gradebook's ``run`` column."""
        where = f" at cell {self.cell + 1}" if self.cell is not None else ""
        return {
            "ok": "ran",
            "error": f"crashed{where}",
            "timeout": f"timed out{where}",
            "memory": f"stopped{where}: over the memory limit",
        }.get(self.status, "not run")

    def sentence(self, timeout: float) -> str:
        """One sentence for the feedback file."""
        where = f"cell {self.cell + 1} (`{self.first_line}`)" if self.cell is not None else "a cell"
        if self.status == "ok":
            return f"it ran from top to bottom in {self.seconds:.1f} s."
        if self.status == "timeout":
            return (
                f"it was stopped after {timeout:g} s, while running {where}. Look for an endless loop, or make "
                "that cell's work smaller."
            )
        if self.status == "memory":
            return f"it was stopped while running {where}: {self.error}."
        if self.status == "error":
            return f"it stopped at {where}: {self.error}" if self.error else f"it stopped at {where}."
        return "it was not run."


@dataclass(frozen=True)
class StudentGrade:
    """Everything graded for one student: the exercises, the notebook run, and what was unreadable, if anything."""

    student: str
    source: str
    exercises: list[ExerciseGrade]
    run: NotebookRun
    problem: str = ""
    executed: str | None = field(default=None, repr=False, compare=False)
    sandbox: str = field(default="", compare=False)  # what confined the submission's code (the gradebook's column)
    manual: list[manual_grading.ManualAnswer] = field(default_factory=list, repr=False, compare=False)

    @property
    def total(self) -> float:
        return sum(grade.points for grade in self.exercises)

    @property
    def max_points(self) -> float:
        return sum(grade.max_points for grade in self.exercises)


@dataclass(frozen=True)
class Submission:
    """One student's submission: the file or folder found, the notebook in it, or why there is none."""

    student: str
    path: Path
    notebook: Path | None
    problem: str = ""


# ---------------------------------------------------------------------------------------------------------------
# Finding the assignment and the submissions


def resolve_assignment(assignment: str | Path, solutions_dir: Path | None = None) -> Path:
    """The solution notebook for ``00``, ``00_your_machine``, ``00_your_machine.ipynb`` or a notebook's path."""
    given = Path(assignment)
    if given.suffix == ".ipynb" and given.is_file():
        return given
    name = given.name.removesuffix(".ipynb")
    candidates = solution_notebooks(solutions_dir)
    found = [nb for nb in candidates if nb.stem == name] or [
        nb for nb in candidates if nb.stem.startswith(f"{name}_")
    ]
    if len(found) == 1:
        return found[0]
    available = ", ".join(nb.stem for nb in candidates) or "none"
    if not found:
        raise GradingError(f"no solution notebook matches {str(assignment)!r} (available: {available}).")
    raise GradingError(
        f"{str(assignment)!r} matches several notebooks ({', '.join(nb.stem for nb in found)}); give the full name."
    )


def find_submissions(folder: Path, notebook_name: str) -> tuple[list[Submission], list[Path]]:
    """The submissions in ``folder`` (one ``.ipynb`` per student, or one folder per student) and the entries skipped.

    A student's id is the file's stem or the folder's name. In a folder, the notebook named like the assignment is
    taken (at any depth, so nbgrader's ``submitted/<student>/<assignment>/`` layout works), else its only notebook.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise GradingError(f"{folder} is not a folder of submissions.")
    submissions: list[Submission] = []
    skipped: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith((".", "__")):
            continue
        if entry.is_file() and entry.suffix == ".ipynb":
            submissions.append(Submission(entry.stem, entry, entry))
        elif entry.is_dir():
            notebook, problem = _notebook_in(entry, notebook_name)
            submissions.append(Submission(entry.name, entry, notebook, problem))
        else:
            skipped.append(entry)
    return submissions, skipped


def _notebook_in(folder: Path, notebook_name: str) -> tuple[Path | None, str]:
    notebooks = sorted(
        path
        for path in folder.rglob("*.ipynb")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
    named = [path for path in notebooks if path.name == notebook_name]
    if len(named) == 1:
        return named[0], ""
    if len(named) > 1:
        return None, f"{NO_NOTEBOOK}: {len(named)} files named {notebook_name} in the folder; keep one"
    if len(notebooks) == 1:
        return notebooks[0], ""
    if not notebooks:
        return None, f"{NO_NOTEBOOK}: the folder has no .ipynb file"
    return None, f"{NO_NOTEBOOK}: {len(notebooks)} notebooks in the folder and none named {notebook_name}"


def student_ids(submissions: Iterable[Submission]) -> list[str]:
    """Ids safe as file names and spreadsheet cells, made unique with ``-2``, ``-3``... (in the order given)."""
    seen: set[str] = set()
    ids = []
    for submission in submissions:
        base = _STUDENT_ID.sub("_", submission.student).strip("_.") or "student"
        if base[0] in "=+-@":
            base = "_" + base  # a spreadsheet would read it as a formula
        student, number = base, 2
        while student.lower() in seen:
            student, number = f"{base}-{number}", number + 1
        seen.add(student.lower())
        ids.append(student)
    return ids


def parse_submission(data: bytes) -> tuple[NotebookNode | None, str]:
    """The notebook in ``data``, or None and why not (not valid JSON, not a notebook)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None, f"{NOT_JSON}: the file is not UTF-8 text (is it really a .ipynb file?)"
    try:
        content = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, (
            f"{NOT_JSON}: {exc.msg} at line {exc.lineno}, column {exc.colno}; the file is damaged (open it in "
            "a text editor, or download it again)"
        )
    if (
        not isinstance(content, dict)
        or not isinstance(content.get("cells"), list)
        or "nbformat" not in content
    ):
        return None, f"{NOT_NOTEBOOK}: the file is JSON but has no notebook cells"
    try:
        return nbformat.reads(text, as_version=4), ""
    except Exception as exc:  # noqa: BLE001 - nbformat raises many kinds for malformed notebooks
        return None, f"{NOT_NOTEBOOK}: {type(exc).__name__}: {_first_line(str(exc))}"


# ---------------------------------------------------------------------------------------------------------------
# The environment student code runs in


def safe_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) without anything that looks like a secret or a login."""
    source = os.environ if base is None else base
    return {
        name: value
        for name, value in source.items()
        if not (
            any(word in name.upper() for word in _SECRET_WORDS) or name.upper().startswith(_SECRET_PREFIXES)
        )
    }


def grading_environment(workdir: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a submission's processes: no secrets, offline, every scratch path inside ``workdir``."""
    env = safe_environment(base)
    for name in ("tmp", "build"):
        (workdir / name).mkdir(parents=True, exist_ok=True)
    source = os.environ if base is None else base
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(paths.REPO_ROOT), source.get("PYTHONPATH", "")])),
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_TOKEN_PATH": str(workdir / "no-hf-token"),  # never the grader's stored Hub login
            "TOKENIZERS_PARALLELISM": "false",
            "MPLBACKEND": "Agg",
            "PYTHONDONTWRITEBYTECODE": "1",
            "TMPDIR": str(workdir / "tmp"),
            "COURSE_BUILD_DIR": str(workdir / "build"),  # paths.work_dir() and friends stay inside
            "COURSE_FIGURES_FILE": str(workdir / "figures.json"),
            # IPython's history database would otherwise keep every submission's code where the next could read it.
            "IPYTHONDIR": str(workdir / "ipython"),
            "JUPYTER_RUNTIME_DIR": str(workdir / "jupyter-runtime"),
        }
    )
    return env


# ---------------------------------------------------------------------------------------------------------------
# Running the whole notebook


def run_submission(
    notebook: Path, workdir: Path, *, timeout: float, env: Mapping[str, str], sandbox: Sandbox | None = None
) -> tuple[NotebookRun, str | None]:
    """Execute ``notebook`` top to bottom (papermill, tiny profile) in a subprocess, in ``workdir/run``.

    The whole run, kernel start included, gets ``timeout`` seconds; then the runner and its kernel are killed.
    With a ``sandbox`` they run in a box where only ``workdir`` is writable (the notebook and the job read-only).
    Returns how it went and the executed notebook's text (None when there is none).
    """
    run_dir = workdir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    executed, outcome, job = workdir / "executed.ipynb", workdir / "run-result.json", workdir / "run-job.json"
    job.write_text(
        json.dumps(
            {
                "notebook": str(notebook),
                "output": str(executed),
                "cwd": str(run_dir),
                "parameters": {"PROFILE": "tiny"},
                "cell_timeout": timeout,
                "result": str(outcome),
            }
        ),
        encoding="utf-8",
    )
    start = time.perf_counter()
    with open(workdir / "run.log", "wb") as log:
        process = start_process(
            [sys.executable, "-m", "course_utils.course._submission_runner", str(job)],
            cwd=run_dir,
            env=env,
            sandbox=sandbox,
            writable=[workdir],
            readonly=[notebook, job],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        watch = sandbox.memory_watch() if sandbox is not None else None
        timed_out = wait_or_kill(process, timeout, watch)
    seconds = time.perf_counter() - start
    text = _read_small(executed)
    peak = watch.peak_bytes if watch is not None else 0
    if watch is not None and watch.exceeded:
        stopped = analyse_run(_parsed(text), seconds=seconds, timed_out=True, completed=False)
        return dataclasses.replace(stopped, status="memory", error=watch.reason(), memory_bytes=peak), text
    try:
        report = json.loads(outcome.read_text(encoding="utf-8")) if outcome.exists() and not timed_out else {}
    except (OSError, ValueError):
        report = {}
    if not timed_out and not report:
        tail = _tail(workdir / "run.log")
        report = {"completed": False, "error": f"the runner stopped (exit code {process.returncode}){tail}"}
    nb = _parsed(text)
    run = analyse_run(
        nb,
        seconds=seconds,
        timed_out=timed_out,
        completed=bool(report.get("completed")),
        error=str(report.get("error", "")),
    )
    return dataclasses.replace(run, memory_bytes=peak), text


def _parsed(text: str | None) -> NotebookNode | None:
    try:
        return nbformat.reads(text, as_version=4) if text else None
    except Exception:  # noqa: BLE001 - the executed copy may be half written when the run was killed
        return None


def submission_sandbox(required: bool | Sandbox = True, hidden: Iterable[Path] = ()) -> Sandbox:
    """The sandbox submissions run in, hiding ``hidden`` folders of the workbook from them.

    ``required`` True: bubblewrap, or a :class:`GradingError` that says why there is none and what to do. False (the
    instructor's ``--no-sandbox``): no box, and the gradebook says so. A :class:`Sandbox` is used as it is.
    """
    if isinstance(required, Sandbox):
        box = required
    elif required:
        box = find_sandbox()
        if not box.confined:
            raise GradingError(
                f"no sandbox for the submissions: {box.reason}. Student code would run as your user, with your "
                "files and network. Install bubblewrap, or pass --no-sandbox to grade without one (in a throw-away "
                "container, for example)."
            )
    else:
        why = find_sandbox().reason or "bubblewrap was available"
        box = unconfined(f"--no-sandbox: student code ran as the grader's user ({why})")
    hidden = [*hidden, paths.REPO_ROOT / "build", paths.solutions_dir(), paths.REPO_ROOT / ".git"]
    return box.with_hidden(hidden)


def analyse_run(
    executed: NotebookNode | None, *, seconds: float, timed_out: bool, completed: bool, error: str = ""
) -> NotebookRun:
    """How a run went, from the executed notebook papermill saves as it goes (cell status, error outputs)."""
    cells = [
        cell
        for cell in (executed.cells if executed is not None else [])
        if not set(cell_tags(cell)) & set(PAPERMILL_TAGS)
    ]
    running: int | None = None
    failed_checks = 0
    for index, cell in enumerate(cells):
        if cell.cell_type != "code":
            continue
        meta = cell.get("metadata", {}).get("papermill", {})
        errors = [out for out in cell.get("outputs", []) if out.get("output_type") == "error"]
        if errors or meta.get("exception"):
            if RAISES_TAG in cell_tags(cell):
                failed_checks += 1
                continue
            message = f"{errors[0].get('ename')}: {errors[0].get('evalue')}" if errors else error
            return NotebookRun("error", seconds, index, _first_line(cell.source), message, failed_checks)
        if meta.get("start_time") and not meta.get("end_time"):
            running = index
    first_line = _first_line(cells[running].source) if running is not None else ""
    if timed_out:
        return NotebookRun("timeout", seconds, running, first_line, "", failed_checks)
    if not completed:
        if "CellTimeoutError" in error:
            return NotebookRun("timeout", seconds, running, first_line, "", failed_checks)
        return NotebookRun("error", seconds, running, first_line, error or "the run stopped", failed_checks)
    return NotebookRun("ok", seconds, failed_checks=failed_checks)




# ---------------------------------------------------------------------------------------------------------------
# Grading the exercises


def hidden_lines(check_source: str) -> set[int]:
    """The 1-based lines of ``check_source`` inside hidden-test regions (markers included)."""
    return {
        number + 1
        for region in find_regions(check_source)
        if region.kind == "hidden"
        for number in range(region.begin, region.end + 1)
    }


def classify(result: Result, exercise: Exercise) -> str:
    """Why an exercise passed or not, in a few words (one of the reason constants of this module)."""
    if result.passed:
        return PASSED
    if result.kind == "timeout":
        return TIMED_OUT
    if result.kind == "memory":
        return OVER_MEMORY
    if result.kind == "output":
        return TOO_MUCH_OUTPUT
    if result.kind == "not-written":
        return NOT_WRITTEN
    if result.kind == "delegated":
        return DELEGATED
    if result.stage == "imports" or (result.stage == "check" and result.kind == "syntax-error"):
        return GRADER_ERROR  # the solution's own cells failed: not the student's fault
    if result.kind == "failed":
        return HIDDEN if result.line in hidden_lines(exercise.check_source) else WRONG
    if result.kind == "syntax-error":
        return SYNTAX
    if result.stage == "check" and result.message.startswith("NameError"):
        return UNDEFINED
    return CRASHED


@dataclass(frozen=True)
class GradingOptions:
    """How every submission is graded: the time limits, whether its notebook runs, what the feedback reveals, and
    the box its code runs in (None: unconfined). One object, handed down from the folder to each exercise."""

    timeout: float = DEFAULT_TIMEOUT  # the whole notebook's run
    check_timeout: float = DEFAULT_CHECK_TIMEOUT  # each exercise's check
    run: bool = True
    reveal_hidden: bool = True
    scratch_dir: Path | None = None
    sandbox: Sandbox | None = None


def grade_exercises(
    reference: ExerciseNotebook,
    student: NotebookNode,
    *,
    workdir: Path,
    env: Mapping[str, str] | None = None,
    solution: NotebookNode | None = None,
    options: GradingOptions = GradingOptions(),
) -> list[ExerciseGrade]:
    """Grade each exercise of ``reference`` on the student's own cell, each in a fresh subprocess under ``workdir``.

    Cells are matched by nbgrader grade_id; when a notebook lost its nbgrader metadata, by the solution's cell id
    (pass ``solution``). The check and hidden tests come from ``reference``, never from the student's notebook.
    """
    answers = student_answers(student, [exercise.grade_id for exercise in reference.exercises])
    if solution is not None:
        answers = _match_by_cell_id(answers, student, solution)
    grades = []
    for exercise in reference.exercises:
        answer = answers.get(exercise.grade_id)
        if answer is None:
            grades.append(
                ExerciseGrade(
                    exercise.grade_id,
                    0.0,
                    exercise.points,
                    DELETED,
                    f"the exercise cell (grade_id {exercise.grade_id!r}) is not in the notebook: it was deleted, or "
                    "its metadata was lost. Copy the cell from a fresh copy of the notebook and write your answer "
                    "there.",
                )
            )
            continue
        result = evaluate(
            reference.imports_source,
            answer,
            exercise.check_source,
            timeout=options.check_timeout,
            workdir=workdir / "checks" / exercise.grade_id,
            env=env,
            sandbox=options.sandbox,
        )
        reason = classify(result, exercise)
        message = "" if reason == PASSED else result.message
        if reason == HIDDEN and not options.reveal_hidden:
            message = (
                "one of the instructor's hidden tests failed; try more cases (edge cases, other inputs)."
            )
        points = exercise.points if reason == PASSED else 0.0
        grades.append(
            ExerciseGrade(exercise.grade_id, points, exercise.points, reason, message, result.seconds)
        )
    return grades


def _match_by_cell_id(
    answers: dict[str, str | None], student: NotebookNode, solution: NotebookNode
) -> dict[str, str | None]:
    ids = {nbgrader_meta(cell).get("grade_id"): cell.get("id") for cell in solution.cells if cell.get("id")}
    by_id = {cell.get("id"): cell for cell in student.cells if cell.cell_type == "code" and cell.get("id")}
    found = dict(answers)
    for grade_id, source in answers.items():
        cell = by_id.get(ids.get(grade_id))
        if source is None and cell is not None and not nbgrader_meta(cell):
            found[grade_id] = cell.source
    return found


# ---------------------------------------------------------------------------------------------------------------
# One submission, then all of them


def grade_submission(
    student: str,
    data: bytes | None,
    reference: ExerciseNotebook,
    *,
    solution: NotebookNode | None = None,
    problem: str = "",
    source: str = "",
    options: GradingOptions = GradingOptions(),
) -> StudentGrade:
    """Grade one submission (its bytes, read beforehand) in a temporary folder of its own, removed afterwards.

    With ``options.sandbox``, every process of the submission runs in a box of its own
    (:mod:`course_utils.course.sandbox`).
    """
    nb = None
    if not problem:
        if data is None:
            problem = NO_NOTEBOOK
        elif len(data) > MAX_NOTEBOOK_BYTES:
            problem = f"{NOT_NOTEBOOK}: the file is larger than {MAX_NOTEBOOK_BYTES // 2**20} MiB"
        else:
            nb, problem = parse_submission(data)
    if nb is None:
        reason = problem.split(":", 1)[0]
        zeros = [ExerciseGrade(ex.grade_id, 0.0, ex.points, reason) for ex in reference.exercises]
        return StudentGrade(student, source, zeros, NotebookRun("skipped"), problem)
    if options.scratch_dir is not None:
        Path(options.scratch_dir).mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"grade-{student}-", dir=options.scratch_dir))
    if options.sandbox is not None:  # its boxes write here, nowhere else
        options = dataclasses.replace(options, sandbox=options.sandbox.within(workdir))
    try:
        env = grading_environment(workdir)
        notebook = workdir / "input" / "submission.ipynb"
        notebook.parent.mkdir()
        notebook.write_bytes(data or b"")
        executed = None
        notebook_run = NotebookRun("skipped")
        if options.run:
            notebook_run, executed = run_submission(notebook, workdir, timeout=options.timeout, env=env,
                                                    sandbox=options.sandbox)
        grades = grade_exercises(reference, nb, workdir=workdir, env=env, solution=solution, options=options)
        manual = manual_answers_of(solution, nb, executed)
        return StudentGrade(student, source, grades, notebook_run, executed=executed, manual=manual)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def grade_submissions(
    assignment: Path,
    submissions_dir: Path,
    out_dir: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    check_timeout: float = DEFAULT_CHECK_TIMEOUT,
    run: bool = True,
    jobs: int = 1,
    scratch_dir: Path | None = None,
    reveal_hidden: bool = True,
    log: Callable[[str], None] | None = print,
    sandbox: bool | Sandbox = True,
) -> list[StudentGrade]:
    """Grade every submission in ``submissions_dir`` against the solution ``assignment``; write into ``out_dir``.

    Writes ``gradebook.csv``, ``feedback/<student>.md`` and ``executed/<student>.ipynb`` (the run's outputs, for
    reading and for written answers graded by hand). Returns the grades in the gradebook's order. Student code runs
    in a sandbox (``sandbox=False`` is ``--no-sandbox``; see :func:`submission_sandbox`).
    """
    assignment, submissions_dir, out_dir = Path(assignment), Path(submissions_dir), Path(out_dir)
    solution = read_notebook(assignment)
    reference = parse_exercises(solution, assignment.name)
    if not reference.exercises:
        raise GradingError(
            f"{assignment.name} has no auto-graded exercise (a solution cell followed by a check)."
        )
    if out_dir.resolve().is_relative_to(submissions_dir.resolve()):
        raise GradingError(f"write the grades outside the submissions folder (--out), not into {out_dir}.")
    submissions, skipped = find_submissions(submissions_dir, assignment.name)
    say = log or (lambda _: None)
    for entry in skipped:
        say(f"skipped {entry.name}: not a .ipynb file or a folder")
    if not submissions:
        raise GradingError(f"{submissions_dir} holds no submission (a .ipynb file or a folder per student).")
    ids = student_ids(submissions)
    box = submission_sandbox(sandbox, [assignment.parent, submissions_dir, out_dir])
    say(f"sandbox: {box.describe()}")
    options = GradingOptions(timeout, check_timeout, run, reveal_hidden, scratch_dir, box)
    # Read every submission before any student code runs: no submission can change what another is graded on.
    snapshots = [_snapshot(submission) for submission in submissions]

    def one(index: int) -> StudentGrade:
        submission, (data, problem) = submissions[index], snapshots[index]
        source = str(submission.path.relative_to(submissions_dir))
        try:
            grade = grade_submission(
                ids[index],
                data,
                reference,
                solution=solution,
                problem=problem,
                source=source,
                options=options,
            )
        except Exception as exc:  # noqa: BLE001 - a grader failure on one submission never stops the others
            reason = f"{GRADER_ERROR}: {type(exc).__name__}: {_first_line(str(exc))}"
            zeros = [ExerciseGrade(ex.grade_id, 0.0, ex.points, GRADER_ERROR) for ex in reference.exercises]
            grade = StudentGrade(ids[index], source, zeros, NotebookRun("skipped"), reason)
        grade = dataclasses.replace(grade, sandbox=box.label())
        say(_progress_line(grade))
        return grade

    say(f"grading {len(submissions)} submissions of {assignment.name} ...")
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        grades = list(pool.map(one, range(len(submissions))))
    write_results(out_dir, grades, reference, solution=solution, timeout=timeout)
    say(f"wrote {out_dir / 'gradebook.csv'} and {len(grades)} feedback files in {out_dir / 'feedback'}")
    return grades


def _snapshot(submission: Submission) -> tuple[bytes | None, str]:
    if submission.notebook is None:
        return None, submission.problem or NO_NOTEBOOK
    try:
        if submission.notebook.stat().st_size > MAX_NOTEBOOK_BYTES:
            return None, f"{NOT_NOTEBOOK}: the file is larger than {MAX_NOTEBOOK_BYTES // 2**20} MiB"
        return submission.notebook.read_bytes(), ""
    except OSError as exc:
        return None, f"{NOT_NOTEBOOK}: cannot read it ({exc.strerror})"


def _progress_line(grade: StudentGrade) -> str:
    status = grade.problem or f"notebook {grade.run.summary()}"
    return f"  {grade.student}: {_points(grade.total)} / {_points(grade.max_points)} points; {status}"


# ---------------------------------------------------------------------------------------------------------------
# Gradebook and feedback


def gradebook_rows(
    grades: list[StudentGrade], grade_ids: list[str], items: list[manual_grading.ManualItem] | None = None
) -> list[dict[str, str]]:
    """The gradebook as rows: student, one column of points per exercise, total, max, run, notes, sandbox.

    With hand-graded ``items`` the automatic points get their own ``auto``/``auto_max`` columns, followed by one
    empty column per item (filled by ``grade merge-manual``), ``manual`` and ``manual_max``; ``total`` is then
    what is marked so far and ``max`` counts every point.
    """
    items = items or []
    rows = []
    for grade in grades:
        by_id = {exercise.grade_id: exercise for exercise in grade.exercises}
        row = {"student": grade.student}
        row.update(
            {grade_id: _points(by_id[grade_id].points) if grade_id in by_id else "" for grade_id in grade_ids}
        )
        notes = (
            [grade.problem]
            if grade.problem
            else [
                f"{exercise.grade_id}: {exercise.reason}"
                for exercise in grade.exercises
                if not exercise.passed
            ]
        )
        manual_max = sum(item.points for item in items)
        if items:
            row.update(auto=_points(grade.total), auto_max=_points(grade.max_points))
            row.update({item.grade_id: "" for item in items}, manual="", manual_max=_points(manual_max))
            notes.append(manual_grading.unmarked_note(len(items)))
        row.update(
            total=_points(grade.total),
            max=_points(grade.max_points + manual_max),
            run=grade.run.summary(),
            notes="; ".join(notes),
            sandbox=grade.sandbox,
        )
        rows.append(row)
    return rows


def gradebook_columns(grade_ids: list[str], items: list[manual_grading.ManualItem] | None = None) -> list[str]:
    """The gradebook's header: exercise columns by grade_id, then the hand-graded ones when there are any."""
    manual = ["auto", "auto_max", *manual_grading.manual_columns(items)] if items else []
    return ["student", *grade_ids, *manual, "total", "max", "run", "notes", "sandbox"]


def gradebook_csv(
    grades: list[StudentGrade], grade_ids: list[str], items: list[manual_grading.ManualItem] | None = None
) -> str:
    """The gradebook CSV text (one row per student; exercise columns named by grade_id)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=gradebook_columns(grade_ids, items), lineterminator="\n")
    writer.writeheader()
    writer.writerows(gradebook_rows(grades, grade_ids, items))
    return buffer.getvalue()


def exercise_titles(solution: NotebookNode) -> dict[str, str]:
    """Each exercise's title: the first heading of the markdown cell just before its solution cell."""
    titles = {}
    for previous, cell in zip(solution.cells, solution.cells[1:]):
        grade_id = nbgrader_meta(cell).get("grade_id")
        if grade_id and nbgrader_meta(cell).get("solution") and previous.cell_type == "markdown":
            heading = next((line for line in previous.source.split("\n") if line.startswith("#")), "")
            if heading:
                titles[grade_id] = heading.lstrip("#").strip()
    return titles


def manual_answers(solution: NotebookNode) -> list[tuple[str, float]]:
    """Items graded by hand (written answers and tasks): (grade_id, points), in order."""
    return [(item.grade_id, item.points) for item in manual_grading.manual_items(solution)]


def manual_answers_of(
    solution: NotebookNode | None, student: NotebookNode | None, executed: str | None
) -> list[manual_grading.ManualAnswer]:
    """The student's answer to each hand-graded item, with the output above it from the executed run."""
    if solution is None:
        return []
    try:
        run = nbformat.reads(executed, as_version=4) if executed else None
    except Exception:  # noqa: BLE001 - a half-written executed copy has no outputs to show
        run = None
    return manual_grading.student_answers(manual_grading.manual_items(solution), student, run)


def feedback_markdown(
    grade: StudentGrade,
    assignment: str,
    *,
    titles: Mapping[str, str] | None = None,
    manual: list[tuple[str, float]] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """The short feedback file for one student: score, how the notebook ran, and what failed and why."""
    titles = titles or {}
    lines = [
        f"# {assignment}: feedback for {grade.student}",
        "",
        f"**Score: {_points(grade.total)} / {_points(grade.max_points)} points** (automatically graded exercises).",
        "",
    ]
    if grade.problem:
        lines += [f"Your submission could not be graded: {grade.problem}.", ""]
        lines.append(
            _ADVICE[GRADER_ERROR]
            if grade.problem.startswith(GRADER_ERROR)
            else "Submit the `.ipynb` file you worked in (in Jupyter: File > Download; in Colab: File > Download > "
            "Download .ipynb), not a copy of its text or a PDF."
        )
        return "\n".join(lines) + "\n"
    lines += [f"Restart & Run All (fresh kernel, tiny profile): {grade.run.sentence(timeout)}"]
    if grade.run.status not in ("ok", "skipped"):
        lines += [
            "",
            "Each exercise is still graded on its own (the imports cell, your exercise cell, then the check with "
            "the instructor's hidden tests, in a fresh Python): a cell that fails elsewhere costs no points by itself.",
        ]
    lines += ["", "| exercise | points | result |", "| --- | ---: | --- |"]
    for exercise in grade.exercises:
        title = titles.get(exercise.grade_id)
        name = f"{title} (`{exercise.grade_id}`)" if title else f"`{exercise.grade_id}`"
        lines.append(
            f"| {_table_text(name)} | {_points(exercise.points)} / {_points(exercise.max_points)} | {exercise.reason} |"
        )
    failed = [exercise for exercise in grade.exercises if not exercise.passed]
    if failed:
        lines += ["", "## What to fix"]
        for exercise in failed:
            lines += ["", f"### `{exercise.grade_id}`: {exercise.reason}", "", _advice(exercise)]
    if manual:
        lines += [
            "",
            "Written answers are graded by hand: "
            + ", ".join(f"`{grade_id}` ({_points(points)} points)" for grade_id, points in manual)
            + ".",
        ]
    return "\n".join(lines) + "\n"


_ADVICE = {
    HIDDEN: "Your function passes the example in the notebook but not every case: try it on more inputs (edge "
    "cases such as empty or unusual ones).",
    TIMED_OUT: "Your code ran past the time limit: look for an endless loop, or work on smaller inputs.",
    OVER_MEMORY: "Your code and what it started used more memory than the grader allows a submission: free what "
    "you no longer need, or work on smaller inputs.",
    TOO_MUCH_OUTPUT: "Your code printed far more than an exercise needs: print a summary, not every value.",
    CRASHED: "Your cell raised an error. Restart the kernel and run the imports cell, then your cell, on its own: "
    "it may use only what the imports cell imports.",
    DELEGATED: "Your function calls the workbook's own implementation of this exercise, or a library's (named "
    "above), instead of computing the answer: write the computation yourself; the check and the grader refuse the "
    "shortcut.",
    UNDEFINED: "The check could not find your function: keep the name and the arguments the exercise asks for.",
    SYNTAX: "Python cannot read the cell: fix the line named above.",
    GRADER_ERROR: "This is a problem on the grading side, not in your answer: your instructor will look at it.",
}


def _advice(exercise: ExerciseGrade) -> str:
    message = "\n".join(f"> {line}" if line else ">" for line in exercise.message.strip().split("\n"))
    advice = _ADVICE.get(exercise.reason, "")
    return "\n\n".join(part for part in (message, advice) if part)


def write_results(
    out_dir: Path,
    grades: list[StudentGrade],
    reference: ExerciseNotebook,
    *,
    solution: NotebookNode | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Write ``gradebook.csv``, ``feedback/<student>.md`` and ``executed/<student>.ipynb`` into ``out_dir``.

    When the assignment has items graded by hand, also ``manual/`` (see :mod:`course_utils.course.manual_grading`).
    """
    grade_ids = [exercise.grade_id for exercise in reference.exercises]
    titles = exercise_titles(solution) if solution is not None else {}
    items = manual_grading.manual_items(solution) if solution is not None else []
    manual = [(item.grade_id, item.points) for item in items]
    (out_dir / "feedback").mkdir(parents=True, exist_ok=True)
    (out_dir / "gradebook.csv").write_text(gradebook_csv(grades, grade_ids, items), encoding="utf-8", newline="")
    for grade in grades:
        text = feedback_markdown(grade, reference.name, titles=titles, manual=manual, timeout=timeout)
        (out_dir / "feedback" / f"{grade.student}.md").write_text(text, encoding="utf-8")
        if grade.executed:
            (out_dir / "executed").mkdir(exist_ok=True)
            (out_dir / "executed" / f"{grade.student}.ipynb").write_text(grade.executed, encoding="utf-8")
    if items:
        students = [(grade.student, grade.manual, grade.problem) for grade in grades]
        manual_grading.write_marking_files(out_dir, students, items, reference.name)


def _points(value: float) -> str:
    return f"{value:g}"


def _table_text(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _first_line(text: str, limit: int = 80) -> str:
    line = next((line.strip() for line in text.split("\n") if line.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _read_small(path: Path) -> str | None:
    try:
        if path.exists() and path.stat().st_size <= MAX_NOTEBOOK_BYTES:
            return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        pass
    return None


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    tail = "\n".join(text.splitlines()[-lines:])
    return f": {tail}" if tail else ""
