"""Grading: a folder of synthetic submissions gets the expected points and reasons, and none can affect another."""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import os
import time
from pathlib import Path

import nbformat
import pytest
from nb_builders import (
    EXAMPLE_SOLUTION,
    GRADING_NAME,
    GRADING_SOLUTIONS,
    code,
    grading_solution,
    markdown,
    notebook,
)

from course_utils.__main__ import main
from course_utils.course.exercises import Exercise, Result, evaluate, parse_exercises
from course_utils.course.grading import (
    CRASHED,
    DELETED,
    GRADER_ERROR,
    HIDDEN,
    NO_NOTEBOOK,
    NOT_JSON,
    NOT_NOTEBOOK,
    NOT_WRITTEN,
    PASSED,
    SYNTAX,
    TIMED_OUT,
    UNDEFINED,
    WRONG,
    ExerciseGrade,
    GradingError,
    GradingOptions,
    NotebookRun,
    StudentGrade,
    analyse_run,
    classify,
    exercise_titles,
    feedback_markdown,
    find_submissions,
    grade_exercises,
    grade_submissions,
    gradebook_csv,
    grading_environment,
    hidden_lines,
    manual_answers,
    parse_submission,
    resolve_assignment,
    safe_environment,
    student_ids,
    write_results,
)
from course_utils.course.release import make_student_notebook, read_notebook, write_notebook
from course_utils.ground import paths

IDS = list(GRADING_SOLUTIONS)  # nb02-word-count (2 points), nb02-squares (1), nb02-initials (1)
ANSWERS = {  # the solutions as a student would type them (no markers)
    grade_id: "\n".join(line for line in source.split("\n") if "### " not in line)
    for grade_id, source in GRADING_SOLUTIONS.items()
}
SQUARES_NOT_EMPTY = "def squares(n):\n    return [i * i for i in range(max(n, 1))]"  # squares(0) == [0]
INITIALS_LOWER = 'def initials(name):\n    return "".join(word[0] for word in name.split())'  # "gbh"
INITIALS_WRONG = "def initials(name):\n    return name[:2]"

VANDAL = """\
import os, pathlib
from course_utils.ground import paths
targets = [pathlib.Path("vandal.txt"), pathlib.Path("../vandal.txt"), pathlib.Path(os.environ["TMPDIR"], "vandal.txt"),
           paths.work_dir("nb02") / "vandal.txt"]
seen = [str(target) for target in targets if target.exists()]
if seen:
    raise RuntimeError(f"another submission's files are visible: {seen}")
for target in targets:
    target.write_text("vandal")
for name in ("full.ipynb", "../full.ipynb", "gradebook.csv", "../gradebook.csv", "../executed.ipynb"):
    pathlib.Path(name).write_text("{}")  # clobber a sibling or the gradebook by a relative path
if any(os.environ.get(name) for name in ("HF_TOKEN", "GRADER_SECRET_PASSWORD", "AWS_SECRET_ACCESS_KEY")):
    raise RuntimeError("student code saw a secret")"""
SECRET_CHECK = (
    "import os\n"
    'if os.environ.get("HF_TOKEN") or os.environ.get("GRADER_SECRET_PASSWORD"):\n'
    '    raise RuntimeError("student code saw a secret")\n'
)


def _student(
    answers: dict[str, str] | None = None,
    *,
    drop: tuple[str, ...] = (),
    before: dict[int, str] | None = None,
    imports: str | None = None,
) -> nbformat.NotebookNode:
    """The released student notebook with answers typed in, cells deleted, or new code cells inserted."""
    nb = make_student_notebook(grading_solution())
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.metadata.get("nbgrader", {}).get("solution") and grade_id in (answers or {}):
            cell.source = answers[grade_id]
    if imports is not None:
        nb.cells[3].source = imports
    nb.cells = [cell for cell in nb.cells if cell.metadata.get("nbgrader", {}).get("grade_id") not in drop]
    for index, source in sorted((before or {}).items(), reverse=True):
        cell = code(source)
        cell["id"] = f"student-{index}"
        nb.cells.insert(index, cell)
    return nb


def _write(nb: nbformat.NotebookNode, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_notebook(nb, path)
    return path


def _solution(folder: Path) -> Path:
    return _write(grading_solution(), folder / "solutions" / GRADING_NAME)


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# --- the whole thing, on a folder of synthetic submissions ------------------------------------------------------


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade one folder of every kind of submission (papermill runs included); returns what the tests look at."""
    root = tmp_path_factory.mktemp("grading")
    solution = _solution(root)
    subs = root / "submissions"
    _write(_student(ANSWERS), subs / "full.ipynb")
    _write(_student(), subs / "blank.ipynb")
    _write(
        _student({**ANSWERS, "nb02-squares": SQUARES_NOT_EMPTY, "nb02-initials": INITIALS_WRONG}),
        subs / "partial.ipynb",
    )
    raises = {
        **ANSWERS,
        "nb02-squares": ANSWERS["nb02-squares"] + '\n\nraise ValueError("oops, left over")',
        "nb02-initials": INITIALS_LOWER,
    }
    _write(
        _student(raises, imports="from course_utils import checks\nimport numpy_that_does_not_exist"),
        subs / "raises.ipynb",
    )
    (subs / "broken.ipynb").write_text('{"cells": [{"cell_type": "code", "source": "def word_count(', "utf-8")
    (subs / "notes.ipynb").write_text('{"title": "my notes", "text": "word_count splits"}', "utf-8")
    _write(_student(ANSWERS, drop=("nb02-word-count",)), subs / "deleted.ipynb")
    _write(_student(ANSWERS), subs / "carol" / GRADING_NAME)  # one folder per student
    (subs / "carol" / "scratch.txt").write_text("not graded")
    (subs / "dave").mkdir()
    (subs / "dave" / "answers.txt").write_text("I wrote my answers here")
    vandal = {**ANSWERS, "nb02-word-count": SECRET_CHECK + ANSWERS["nb02-word-count"]}
    for name in ("a-vandal.ipynb", "z-vandal.ipynb"):  # graded first and last: neither may see the other
        _write(_student(vandal, before={4: VANDAL}), subs / name)
    (subs / "README.txt").write_text("Downloaded from the course site.")
    before = _digest(subs)
    out, scratch = root / "out", root / "scratch"
    lines: list[str] = []
    secrets = {"HF_TOKEN": "hf_" + "x" * 34, "GRADER_SECRET_PASSWORD": "hunter2"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in secrets.items():
            patch.setenv(name, value)
        start = time.perf_counter()
        grades = grade_submissions(
            solution, subs, out, timeout=120, check_timeout=30, jobs=2, scratch_dir=scratch, log=lines.append
        )
        seconds = time.perf_counter() - start
    return {
        "root": root,
        "subs": subs,
        "out": out,
        "scratch": scratch,
        "before": before,
        "grades": {grade.student: grade for grade in grades},
        "order": [grade.student for grade in grades],
        "log": lines,
        "seconds": seconds,
        "sandbox": grades[0].sandbox,
    }


EXPECTED = {  # student: (points per exercise, reasons per exercise, run column)
    "full": ([2, 1, 1], [PASSED, PASSED, PASSED], "ran"),
    "blank": ([0, 0, 0], [NOT_WRITTEN] * 3, "ran"),
    "partial": ([2, 0, 0], [PASSED, HIDDEN, WRONG], "ran"),
    "raises": ([2, 0, 0], [PASSED, CRASHED, HIDDEN], "crashed at cell 4"),
    "broken": ([0, 0, 0], [NOT_JSON] * 3, "not run"),
    "notes": ([0, 0, 0], [NOT_NOTEBOOK] * 3, "not run"),
    "deleted": ([0, 1, 1], [DELETED, PASSED, PASSED], "ran"),
    "carol": ([2, 1, 1], [PASSED] * 3, "ran"),
    "dave": ([0, 0, 0], [NO_NOTEBOOK] * 3, "not run"),
    "a-vandal": ([2, 1, 1], [PASSED] * 3, "ran"),
    "z-vandal": ([2, 1, 1], [PASSED] * 3, "ran"),
}


@pytest.mark.sandbox
@pytest.mark.slow
def test_every_submission_gets_its_points_and_reason(graded):
    grades = graded["grades"]
    assert sorted(grades) == sorted(EXPECTED)
    for student, (points, reasons, run) in EXPECTED.items():
        grade = grades[student]
        assert [exercise.points for exercise in grade.exercises] == points, (student, grade)
        assert [exercise.reason for exercise in grade.exercises] == reasons, (student, grade)
        assert grade.run.summary() == run, (student, grade.run)
        assert grade.max_points == 4
    assert grades["raises"].run.error.startswith(
        "ModuleNotFoundError: No module named 'numpy_that_does_not_exist'"
    )
    assert grades["blank"].run.failed_checks == 3  # Run All went past the failing checks, as in Jupyter
    assert "line 1, column" in grades["broken"].problem
    assert graded["order"] == sorted(EXPECTED)
    assert any("skipped README.txt" in line for line in graded["log"])


@pytest.mark.sandbox
@pytest.mark.slow
def test_the_gradebook_csv(graded):
    rows = list(csv.DictReader(io.StringIO((graded["out"] / "gradebook.csv").read_text("utf-8"))))
    assert list(rows[0]) == ["student", *IDS, "total", "max", "run", "notes", "sandbox"]
    by_student = {row["student"]: row for row in rows}
    assert {row["sandbox"] for row in rows} == {graded["sandbox"]}  # the same box for everyone, named
    assert graded["sandbox"] == "bubblewrap"
    assert any(line.startswith("sandbox: bubblewrap: own home and /tmp, workbook and submission read-only, no network")
               for line in graded["log"])
    assert by_student["full"] == {
        "student": "full",
        "nb02-word-count": "2",
        "nb02-squares": "1",
        "nb02-initials": "1",
        "total": "4",
        "max": "4",
        "run": "ran",
        "notes": "",
        "sandbox": graded["sandbox"],
    }
    assert by_student["partial"]["total"] == "2"
    assert by_student["partial"]["notes"] == "nb02-squares: failed a hidden test; nb02-initials: wrong answer"
    assert by_student["broken"]["notes"].startswith("not valid JSON")
    assert by_student["dave"]["notes"] == "no notebook found: the folder has no .ipynb file"


@pytest.mark.sandbox
@pytest.mark.slow
def test_feedback_says_what_failed_and_why(graded):
    feedback = graded["out"] / "feedback"
    assert sorted(path.stem for path in feedback.glob("*.md")) == sorted(EXPECTED)
    partial = (feedback / "partial.md").read_text("utf-8")
    assert "**Score: 2 / 4 points**" in partial
    assert "it ran from top to bottom" in partial
    assert "squares(0): expected [], got [0]." in partial  # the hidden test's own message
    assert "initials('Ada Lovelace'): expected 'AL', got 'Ad'." in partial
    assert "| Exercise 1 · `word-count` (2 points) (`nb02-word-count`) | 2 / 2 | passed |" in partial
    raises = (feedback / "raises.md").read_text("utf-8")
    assert "it stopped at cell 4 (`from course_utils import checks`): ModuleNotFoundError" in raises
    assert "Each exercise is still graded on its own" in raises
    assert "ValueError: oops, left over (in the exercise cell, line 4" in raises
    assert "`nb02-initials`: failed a hidden test" in raises
    assert "AssertionError (in the check cell, line 3" in raises
    deleted = (feedback / "deleted.md").read_text("utf-8")
    assert "`nb02-word-count`: cell deleted" in deleted and "Copy the cell" in deleted
    broken = (feedback / "broken.md").read_text("utf-8")
    assert "could not be graded: not valid JSON" in broken and "Download .ipynb" in broken
    assert "not written" in (feedback / "blank.md").read_text("utf-8")


@pytest.mark.sandbox
@pytest.mark.slow
def test_no_submission_affects_another_or_the_grader(graded):
    root, subs, out = graded["root"], graded["subs"], graded["out"]
    assert _digest(subs) == graded["before"]  # relative-path clobbering reached nothing
    assert not any(root.rglob("vandal.txt")), list(root.rglob("vandal.txt"))
    assert not (paths.REPO_ROOT / "build" / "work" / "nb02").exists()
    assert list(graded["scratch"].iterdir()) == []  # every submission's folder was removed
    assert sorted(path.name for path in out.iterdir()) == ["executed", "feedback", "gradebook.csv"]
    executed = {path.stem for path in (out / "executed").glob("*.ipynb")}
    assert executed == {name for name, (_, _, run) in EXPECTED.items() if run != "not run"}
    # both vandals passed their secret check and ran cleanly: isolated from each other and from the secrets
    assert graded["grades"]["z-vandal"].run.ok and graded["grades"]["a-vandal"].run.ok
    ran = read_notebook(out / "executed" / "full.ipynb")
    assert ran.cells[-1].outputs[0]["text"] == "the end\n"


@pytest.mark.sandbox
@pytest.mark.slow
def test_a_submission_that_loops_forever_is_stopped(tmp_path):
    solution = _solution(tmp_path)
    subs = tmp_path / "submissions"
    looping = {**ANSWERS, "nb02-squares": ANSWERS["nb02-squares"] + "\n\nwhile True:\n    pass"}
    _write(_student(looping, before={4: "while True:\n    pass"}), subs / "loops.ipynb")
    start = time.perf_counter()
    scratch = tmp_path / "scratch"
    (grade,) = grade_submissions(
        solution, subs, tmp_path / "out", timeout=8, check_timeout=5, scratch_dir=scratch, log=None
    )
    seconds = time.perf_counter() - start
    assert [exercise.points for exercise in grade.exercises] == [2, 0, 1]
    assert grade.exercises[1].reason == TIMED_OUT
    assert grade.exercises[1].message.startswith("timed out after 5 s")
    assert grade.run.status == "timeout"
    assert grade.run.summary().startswith("timed out")
    assert seconds < 60, (
        seconds
    )  # 8 s for the notebook, 5 s for the looping exercise, start-up on a busy machine
    feedback = (tmp_path / "out" / "feedback" / "loops.md").read_text("utf-8")
    assert "it was stopped after 8 s" in feedback
    assert _processes_with_env("COURSE_BUILD_DIR", str(scratch)) == []  # the kernel was killed too


def _processes_with_env(name: str, prefix: str) -> list[int]:
    psutil = pytest.importorskip("psutil")
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(name, "").startswith(prefix):
                found.append(process.pid)
        except (psutil.Error, OSError):
            continue
    return found


# --- finding assignments and submissions --------------------------------------------------------------------------


def test_resolve_assignment_by_number_name_or_path(tmp_path):
    solutions = tmp_path / "solutions"
    for name in ("00_your_machine.ipynb", "01_tensors.ipynb", "01_tensors_extra.ipynb"):
        _write(notebook([markdown("# x")]), solutions / name)
    assert resolve_assignment("00", solutions).name == "00_your_machine.ipynb"
    assert resolve_assignment("00_your_machine", solutions).name == "00_your_machine.ipynb"
    assert resolve_assignment("00_your_machine.ipynb", solutions).name == "00_your_machine.ipynb"
    assert resolve_assignment("01_tensors_extra", solutions).name == "01_tensors_extra.ipynb"
    assert resolve_assignment(str(EXAMPLE_SOLUTION)) == EXAMPLE_SOLUTION
    with pytest.raises(GradingError, match="matches several notebooks"):
        resolve_assignment("01", solutions)
    with pytest.raises(GradingError, match=r"no solution notebook matches '07'.*00_your_machine"):
        resolve_assignment("07", solutions)


def test_the_real_assignment_resolves():
    assert resolve_assignment("00").name == "00_your_machine.ipynb"


def test_find_submissions_in_both_layouts(tmp_path):
    nb = nbformat.writes(notebook([code("x = 1")]))
    files = {
        "alice.ipynb": nb,
        "bob/02_grading.ipynb": nb,
        "bob/.ipynb_checkpoints/02_grading-checkpoint.ipynb": nb,
        "carol/ps1/02_grading.ipynb": nb,  # nbgrader's submitted/<student>/<assignment>/ layout
        "dan/my_copy.ipynb": nb,  # the only notebook in the folder
        "erin/a.ipynb": nb,
        "erin/b.ipynb": nb,
        "fay/notes.txt": "no notebook",
        "grades.csv": "",
        ".hidden.ipynb": nb,
        ".ipynb_checkpoints/alice-checkpoint.ipynb": nb,
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    submissions, skipped = find_submissions(tmp_path, "02_grading.ipynb")
    found = {
        s.student: (s.notebook.relative_to(tmp_path).as_posix() if s.notebook else s.problem)
        for s in submissions
    }
    assert found == {
        "alice": "alice.ipynb",
        "bob": "bob/02_grading.ipynb",
        "carol": "carol/ps1/02_grading.ipynb",
        "dan": "dan/my_copy.ipynb",
        "erin": f"{NO_NOTEBOOK}: 2 notebooks in the folder and none named 02_grading.ipynb",
        "fay": f"{NO_NOTEBOOK}: the folder has no .ipynb file",
    }
    assert [path.name for path in skipped] == ["grades.csv"]
    with pytest.raises(GradingError, match="not a folder"):
        find_submissions(tmp_path / "alice.ipynb", "x.ipynb")


def test_student_ids_are_safe_file_names_and_unique():
    class S:
        def __init__(self, student):
            self.student = student

    names = ["alice", "Alice", "bob smith (2)", "=cmd|'/c calc'!A0", "-rf", "@x", "../../etc", ""]
    assert student_ids([S(name) for name in names]) == [
        "alice",
        "Alice-2",
        "bob_smith_2",
        "cmd_c_calc_A0",
        "_-rf",
        "_@x",
        "etc",
        "student",
    ]


def test_parse_submission_names_what_is_wrong():
    assert parse_submission(b'{"cells": [')[1].startswith(f"{NOT_JSON}: Expecting value at line 1, column 12")
    assert parse_submission(b"\xff\xfe\x00binary")[1].startswith(f"{NOT_JSON}: the file is not UTF-8")
    assert (
        parse_submission(b'{"title": "notes"}')[1]
        == f"{NOT_NOTEBOOK}: the file is JSON but has no notebook cells"
    )
    assert parse_submission(b"[1, 2]")[1].startswith(NOT_NOTEBOOK)
    nb, problem = parse_submission(nbformat.writes(notebook([code("x = 1")])).encode())
    assert problem == "" and nb.cells[0].source == "x = 1"


# --- environment ----------------------------------------------------------------------------------------------------


def test_safe_environment_drops_secrets_and_keeps_the_rest():
    base = {
        "PATH": "/usr/bin",
        "HOME": "/home/me",
        "LANG": "C.UTF-8",
        "CUDA_VISIBLE_DEVICES": "0",
        "HF_HOME": "/cache/hf",
        "PYTHONPATH": "/repo",
        "HF_TOKEN": "hf_x",
        "HUGGING_FACE_HUB_TOKEN": "hf_y",
        "AWS_SECRET_ACCESS_KEY": "k",
        "AWS_PROFILE": "p",
        "GITHUB_TOKEN": "g",
        "JUPYTERHUB_API_URL": "http://hub",
        "OPENAI_API_KEY": "o",
        "MY_DB_PASSWORD": "p",
        "SSH_AUTH_SOCK": "/tmp/ssh",
        "GOOGLE_APPLICATION_CREDENTIALS": "/creds.json",
    }
    assert safe_environment(base) == {
        "PATH": "/usr/bin",
        "HOME": "/home/me",
        "LANG": "C.UTF-8",
        "CUDA_VISIBLE_DEVICES": "0",
        "HF_HOME": "/cache/hf",
        "PYTHONPATH": "/repo",
    }


def test_grading_environment_keeps_everything_inside_the_submission_folder(tmp_path):
    env = grading_environment(tmp_path, {"PATH": "/usr/bin", "HF_TOKEN": "hf_x", "PYTHONPATH": "/extra"})
    assert "HF_TOKEN" not in env and env["PATH"] == "/usr/bin"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["PYTHONPATH"] == os.pathsep.join([str(paths.REPO_ROOT), "/extra"])
    for name in (
        "TMPDIR",
        "COURSE_BUILD_DIR",
        "COURSE_FIGURES_FILE",
        "HF_TOKEN_PATH",
        "IPYTHONDIR",
        "JUPYTER_RUNTIME_DIR",
    ):
        assert Path(env[name]).is_relative_to(tmp_path), name
    assert Path(env["TMPDIR"]).is_dir()


# --- how a run went -----------------------------------------------------------------------------------------------


def _executed(cells_meta: list[tuple[str, dict, list, tuple[str, ...]]]) -> nbformat.NotebookNode:
    """An executed notebook: (source, papermill metadata, outputs, tags) per code cell."""
    cells = []
    for source, meta, outputs, tags in cells_meta:
        cell = code(source, tags=tags)
        cell.metadata["papermill"] = meta
        cell.outputs = [nbformat.from_dict(out) for out in outputs]
        cells.append(cell)
    return notebook(cells)


DONE = {"start_time": "t0", "end_time": "t1", "status": "completed", "exception": False}
ERROR = {"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero", "traceback": []}


def test_analyse_run_ok_even_when_tagged_checks_fail():
    nb = _executed(
        [
            ('PROFILE = "tiny"', DONE, [], ("injected-parameters",)),
            ("x = 1", DONE, [], ()),
            (
                "checks.word_count(word_count)",
                DONE,
                [{**ERROR, "ename": "CheckFailed"}],
                ("raises-exception",),
            ),
            ("print(x)", DONE, [], ()),
        ]
    )
    run = analyse_run(nb, seconds=2.0, timed_out=False, completed=True)
    assert run == NotebookRun("ok", 2.0, failed_checks=1)
    assert run.summary() == "ran"


def test_analyse_run_finds_the_failing_cell_without_counting_injected_parameters():
    nb = _executed(
        [
            ('PROFILE = "auto"', DONE, [], ("parameters",)),
            ('PROFILE = "tiny"', DONE, [], ("injected-parameters",)),
            ("x = 1 / 0", {**DONE, "status": "failed", "exception": True}, [ERROR], ()),
            ("print(x)", {"start_time": None, "end_time": None, "status": "pending"}, [], ()),
        ]
    )
    run = analyse_run(nb, seconds=1.0, timed_out=False, completed=True)
    assert (run.status, run.cell, run.first_line, run.error) == (
        "error",
        1,
        "x = 1 / 0",
        "ZeroDivisionError: division by zero",
    )
    assert run.summary() == "crashed at cell 2"
    assert run.sentence(10) == "it stopped at cell 2 (`x = 1 / 0`): ZeroDivisionError: division by zero"


def test_analyse_run_names_the_cell_running_at_the_timeout():
    running = {"start_time": "t0", "end_time": None, "status": "running", "exception": False}
    nb = _executed([("x = 1", DONE, [], ()), ("while True:\n    pass", running, [], ())])
    run = analyse_run(nb, seconds=10.0, timed_out=True, completed=False)
    assert (run.status, run.cell, run.first_line) == ("timeout", 1, "while True:")
    assert run.summary() == "timed out at cell 2"
    assert "stopped after 10 s, while running cell 2 (`while True:`)" in run.sentence(10)
    nothing = analyse_run(None, seconds=10.0, timed_out=True, completed=False)
    assert (nothing.status, nothing.cell, nothing.summary()) == ("timeout", None, "timed out")
    cell_timeout = analyse_run(nb, seconds=9.0, timed_out=False, completed=False, error="CellTimeoutError: x")
    assert cell_timeout.status == "timeout"
    died = analyse_run(
        nb, seconds=3.0, timed_out=False, completed=False, error="DeadKernelError: Kernel died"
    )
    assert (died.status, died.cell, died.error) == ("error", 1, "DeadKernelError: Kernel died")


# --- exercises ----------------------------------------------------------------------------------------------------

CHECK = "checks.expect_equal(f(1), 2, 'f(1)')\n### BEGIN HIDDEN TESTS\nassert f(2) == 3\n### END HIDDEN TESTS\nprint('ok')"
EXERCISE = Exercise("02.ipynb", "nb02-f", "nb02-f-check", 1.0, "", "", CHECK, "")


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        (Result(True, "passed", 0.1, kind="passed"), PASSED),
        (Result(False, "f(1): expected 2, got 3.", 0.1, kind="failed", stage="check", line=1), WRONG),
        (
            Result(
                False,
                "AssertionError (in the check cell, line 3...)",
                0.1,
                kind="failed",
                stage="check",
                line=3,
            ),
            HIDDEN,
        ),
        (Result(False, "not written yet", 0.1, kind="not-written", stage="check", line=1), NOT_WRITTEN),
        (Result(False, "timed out after 5 s", 5.0, kind="timeout"), TIMED_OUT),
        (
            Result(
                False, "ValueError: x (in the exercise cell)", 0.1, kind="error", stage="exercise", line=2
            ),
            CRASHED,
        ),
        (Result(False, "the check process stopped (exit code 3)", 0.1, kind="died"), CRASHED),
        (
            Result(False, "NameError: name 'f' is not defined", 0.1, kind="error", stage="check", line=1),
            UNDEFINED,
        ),
        (
            Result(False, "SyntaxError in the exercise cell", 0.1, kind="syntax-error", stage="exercise"),
            SYNTAX,
        ),
        (
            Result(False, "ModuleNotFoundError: torch", 0.1, kind="error", stage="imports", line=1),
            GRADER_ERROR,
        ),
    ],
)
def test_classify(result, reason):
    assert classify(result, EXERCISE) == reason


def test_hidden_lines():
    assert hidden_lines(CHECK) == {2, 3, 4}
    assert hidden_lines("checks.passed('x')") == set()


IMPORTS = "from course_utils import checks"
DOUBLE_CHECK = (
    "checks.expect_equal(checks.call(double, 2), 4, 'double(2)')\n"
    "### BEGIN HIDDEN TESTS\n"
    "checks.expect_equal(checks.call(double, -1), -2, 'double(-1)')\n"
    "assert double(0) == 0\n"
    "### END HIDDEN TESTS"
)


@pytest.mark.parametrize(
    ("answer", "kind", "stage", "line"),
    [
        ("def double(x):\n    return 2 * x", "passed", "", None),
        ("def double(x):\n    return x + 2", "failed", "check", 3),  # passes the visible check only
        ("def double(x):\n    return 2 * x if x else 1", "failed", "check", 4),  # fails the bare assert
        ("def double(x):\n    raise NotImplementedError()", "not-written", "check", 1),
        ("def double(x):\n    return 2 * x\nraise KeyError('k')", "error", "exercise", 3),
        ("def double(x) return 2 * x", "syntax-error", "exercise", 1),
        ("def double(x):\n    return eval('2 *')", "failed", "check", 1),  # checks.call reports the crash
    ],
)
def test_evaluate_reports_the_kind_and_place_of_a_failure(answer, kind, stage, line):
    result = evaluate(IMPORTS, answer, DOUBLE_CHECK, timeout=30)
    assert (result.kind, result.stage, result.line) == (kind, stage, line), result.message


def test_evaluate_runs_with_the_environment_it_is_given(monkeypatch):
    monkeypatch.setenv("GRADER_SECRET_PASSWORD", "hunter2")
    source = "import os\nprint(os.environ.get('GRADER_SECRET_PASSWORD'), os.environ.get('MARK'))"
    default = evaluate("", source, "", timeout=30)
    assert default.output.strip() == "hunter2 None"  # unchanged for existing callers
    given = evaluate("", source, "", timeout=30, env={**safe_environment(), "MARK": "m"})
    assert given.output.strip() == "None m"


def test_grade_exercises_matches_cells_by_grade_id_then_by_cell_id(tmp_path):
    solution = grading_solution()
    reference = parse_exercises(solution, GRADING_NAME)
    student = _student({**ANSWERS, "nb02-squares": SQUARES_NOT_EMPTY})
    for cell in student.cells:  # an editor that drops cell metadata
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "nb02-word-count":
            del cell.metadata["nbgrader"]
    without = grade_exercises(reference, copy.deepcopy(student), workdir=tmp_path / "a",
                              options=GradingOptions(check_timeout=30))
    assert [grade.reason for grade in without] == [DELETED, HIDDEN, PASSED]
    grades = grade_exercises(
        reference, student, workdir=tmp_path / "b", solution=solution,
        options=GradingOptions(check_timeout=30, reveal_hidden=False),
    )
    assert [grade.points for grade in grades] == [2, 0, 1]
    assert grades[1].message.startswith("one of the instructor's hidden tests failed")
    assert "squares(0)" not in grades[1].message


def test_grade_exercises_ignores_the_students_own_checks(tmp_path):
    solution = grading_solution()
    reference = parse_exercises(solution, GRADING_NAME)
    student = _student({**ANSWERS, "nb02-initials": INITIALS_LOWER})
    for cell in student.cells:  # a student who "fixed" the check cells
        if cell.metadata.get("nbgrader", {}).get("grade") and not cell.metadata["nbgrader"].get("solution"):
            cell.source = "pass"
    grades = grade_exercises(reference, student, workdir=tmp_path, options=GradingOptions(check_timeout=30))
    assert [grade.reason for grade in grades] == [PASSED, PASSED, HIDDEN]


# --- gradebook and feedback ---------------------------------------------------------------------------------------


def _grades() -> list[StudentGrade]:
    return [
        StudentGrade(
            "ann",
            "ann.ipynb",
            [
                ExerciseGrade("nb02-a", 2.0, 2.0, PASSED),
                ExerciseGrade("nb02-b", 0.0, 1.5, WRONG, "b(1): expected 2, got 3.\nTry again."),
            ],
            NotebookRun("error", 3.0, 4, "x = 1/0", "ZeroDivisionError: division by zero"),
            sandbox="bubblewrap",
        ),
        StudentGrade(
            "bo",
            "bo.ipynb",
            [ExerciseGrade("nb02-a", 0.0, 2.0, NOT_JSON), ExerciseGrade("nb02-b", 0.0, 1.5, NOT_JSON)],
            NotebookRun("skipped"),
            problem="not valid JSON: Expecting value at line 1, column 1",
            sandbox="none (--no-sandbox)",
        ),
    ]


def test_gradebook_csv_rows():
    text = gradebook_csv(_grades(), ["nb02-a", "nb02-b"])
    assert text.splitlines() == [
        "student,nb02-a,nb02-b,total,max,run,notes,sandbox",
        "ann,2,0,2,3.5,crashed at cell 5,nb02-b: wrong answer,bubblewrap",
        'bo,0,0,0,3.5,not run,"not valid JSON: Expecting value at line 1, column 1",none (--no-sandbox)',
    ]


def test_feedback_markdown_for_a_graded_and_an_unreadable_submission():
    ann, bo = _grades()
    text = feedback_markdown(
        ann, "02_grading.ipynb", titles={"nb02-a": "Exercise 1 · A"}, manual=[("nb02-essay", 3)]
    )
    assert text.startswith("# 02_grading.ipynb: feedback for ann\n\n**Score: 2 / 3.5 points**")
    assert "it stopped at cell 5 (`x = 1/0`): ZeroDivisionError: division by zero" in text
    assert "| Exercise 1 · A (`nb02-a`) | 2 / 2 | passed |" in text
    assert "| `nb02-b` | 0 / 1.5 | wrong answer |" in text
    assert "### `nb02-b`: wrong answer\n\n> b(1): expected 2, got 3.\n> Try again." in text
    assert "Written answers are graded by hand: `nb02-essay` (3 points)." in text
    unreadable = feedback_markdown(bo, "02_grading.ipynb")
    assert "could not be graded: not valid JSON: Expecting value at line 1, column 1." in unreadable
    assert "| exercise |" not in unreadable


def test_write_results_writes_the_gradebook_and_one_feedback_file_each(tmp_path):
    reference = parse_exercises(grading_solution(), GRADING_NAME)
    grades = [
        StudentGrade(
            "ann",
            "ann.ipynb",
            [ExerciseGrade(i, 0.0, 1.0, NOT_WRITTEN) for i in IDS],
            NotebookRun("ok"),
            "",
            "{}",
        )
    ]
    write_results(tmp_path, grades, reference, solution=grading_solution())
    assert (
        (tmp_path / "gradebook.csv")
        .read_text()
        .startswith("student,nb02-word-count,nb02-squares,nb02-initials,")
    )
    assert "Exercise 2 · `squares` (1 point)" in (tmp_path / "feedback" / "ann.md").read_text()
    assert (tmp_path / "executed" / "ann.ipynb").read_text() == "{}"


def test_titles_and_manual_answers_of_a_solution():
    solution = grading_solution()
    assert exercise_titles(solution)["nb02-squares"] == "Exercise 2 · `squares` (1 point)"
    solution.cells.append(
        markdown(
            "### BEGIN SOLUTION\nBecause.\n### END SOLUTION",
            nbgrader={
                "grade": True,
                "solution": True,
                "locked": False,
                "points": 2,
                "grade_id": "nb02-why",
                "schema_version": 3,
            },
        )
    )
    assert manual_answers(solution) == [("nb02-why", 2.0)]


# --- command line ---------------------------------------------------------------------------------------------------


@pytest.mark.sandbox
def test_cli_grade_without_running_notebooks(tmp_path, capsys):
    solution = _solution(tmp_path)
    subs = tmp_path / "subs"
    _write(_student(ANSWERS), subs / "ann.ipynb")
    _write(_student(), subs / "bo" / GRADING_NAME)
    out = tmp_path / "grades"
    assert (
        main(["grade", str(solution), str(subs), "--out", str(out), "--skip-run", "--check-timeout", "30"])
        == 0
    )
    shown = capsys.readouterr().out
    assert "ann: 4 / 4 points; notebook not run" in shown and "bo: 0 / 4 points" in shown
    rows = list(csv.DictReader((out / "gradebook.csv").open()))
    assert [(row["student"], row["total"], row["run"]) for row in rows] == [
        ("ann", "4", "not run"),
        ("bo", "0", "not run"),
    ]
    assert not (out / "executed").exists()


def test_cli_grade_usage_errors(tmp_path, capsys):
    solution = _solution(tmp_path)
    subs = tmp_path / "subs"
    subs.mkdir()
    assert main(["grade", "99", str(subs)]) == 2
    assert "no solution notebook matches '99'" in capsys.readouterr().err
    assert main(["grade", str(solution), str(subs), "--out", str(tmp_path / "out")]) == 2
    assert "holds no submission" in capsys.readouterr().err
    assert main(["grade", str(solution), str(subs), "--out", str(subs / "grades")]) == 2
    assert "outside the submissions folder" in capsys.readouterr().err
    empty = _write(notebook([markdown("# 03 · Nothing to grade")]), tmp_path / "03_nothing.ipynb")
    assert main(["grade", str(empty), str(subs)]) == 2
    assert "no auto-graded exercise" in capsys.readouterr().err


def test_cli_help_lists_grade_and_stays_light():
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(paths.REPO_ROOT)}
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, course_utils.__main__ as cli; p = cli.build_parser(); "
            "print('grade' in p.format_help(), 'course_utils.course.grading' in sys.modules, 'papermill' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert probe.stdout.split() == ["True", "False", "False"], probe.stderr


@pytest.mark.sandbox
def test_a_grader_failure_on_one_submission_does_not_stop_the_others(tmp_path, monkeypatch):
    import course_utils.course.grading as grading

    solution = _solution(tmp_path)
    subs = tmp_path / "subs"
    for name in ("ann", "bo"):
        _write(_student(), subs / f"{name}.ipynb")
    real = grading.grade_submission

    def flaky(student, *args, **kwargs):
        if student == "ann":
            raise OSError("disk full")
        return real(student, *args, **kwargs)

    monkeypatch.setattr(grading, "grade_submission", flaky)
    ann, bo = grade_submissions(solution, subs, tmp_path / "out", run=False, check_timeout=30, log=None)
    assert ann.problem == f"{GRADER_ERROR}: OSError: disk full"
    assert [exercise.reason for exercise in ann.exercises] == [GRADER_ERROR] * 3
    assert [exercise.reason for exercise in bo.exercises] == [NOT_WRITTEN] * 3
    feedback = (tmp_path / "out" / "feedback" / "ann.md").read_text()
    assert "problem on the grading side" in feedback and "Download .ipynb" not in feedback
