"""The grader's sandbox: what one box lets a process see and do, and hostile submissions that change nothing.

The tests marked ``sandbox`` need bubblewrap (``apt-get install bubblewrap``; ``.ci/run`` installs it): without it
they are skipped with the reason, except in CI, where a missing sandbox fails them (tests/sandbox_required.py).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from nb_builders import GRADING_NAME, GRADING_SOLUTIONS, code, grading_solution

from course_utils.__main__ import main
from course_utils.course import exercises, grading, sandbox
from course_utils.course.exercises import evaluate
from course_utils.course.grading import (
    CRASHED,
    NOT_JSON,
    NOT_WRITTEN,
    PASSED,
    TIMED_OUT,
    TOO_MUCH_OUTPUT,
    GradingError,
    grade_submissions,
)
from course_utils.course.release import make_student_notebook, read_notebook, write_notebook
from course_utils.course.sandbox import Limits, Sandbox
from course_utils.ground import paths

LINUX = sys.platform.startswith("linux")
linux_only = pytest.mark.skipif(not LINUX, reason="the sandbox is bubblewrap, which runs on Linux only")
SMALL = Limits(memory_bytes=2 * 2**30, processes=64, file_bytes=64 * 2**20, tmpfs_bytes=64 * 2**20)


@pytest.fixture(scope="module")
def box() -> Sandbox:
    found = sandbox.find_sandbox(SMALL)
    assert found.confined, f"{found.reason} (the grader refuses to run without a sandbox on Linux)"
    return found


def _run_in(box: Sandbox, source: str, folder: Path, *args: str, readonly: tuple[Path, ...] = ()) -> dict:
    """Run ``source`` (which prints one JSON object last) in ``box`` with ``folder`` writable; what it printed."""
    script = folder / "probe.py"
    script.write_text(textwrap.dedent(source), encoding="utf-8")
    process = box.popen([sys.executable, str(script), *args], cwd=folder, env=os.environ, writable=[folder],
                        readonly=[script, *readonly], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


PROBE = """\
import json, os, resource, socket, sys
from pathlib import Path
repo, home, secret, port, given = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
seen = {"uid": os.getuid(), "home": os.environ["HOME"], "tmpdir": os.environ["TMPDIR"]}
def attempt(name, action):
    try:
        action()
        seen[name] = "ok"
    except OSError as exc:
        seen[name] = exc.errno
attempt("write workbook", lambda: (repo / "course_utils" / "sneaky.py").write_text("x"))
attempt("write own home", lambda: Path(os.environ["HOME"], "notes.txt").write_text("mine"))
attempt("write own tmp", lambda: Path("/tmp/notes.txt").write_text("mine"))
attempt("write own folder", lambda: Path("mine.txt").write_text("mine"))
attempt("write the given file", lambda: given.write_text("changed"))
attempt("write the real home", lambda: (home / "pwned.txt").write_text("x"))
attempt("read the real home", lambda: secret.read_text())
attempt("write /etc", lambda: Path("/etc/pwned").write_text("x"))
attempt("connect to the host", lambda: socket.create_connection(("127.0.0.1", port), timeout=5))
attempt("connect outside", lambda: socket.create_connection(("192.0.2.1", 80), timeout=5))
seen["read workbook"] = (repo / "course_utils" / "__init__.py").is_file()
seen["solutions"] = sorted(os.listdir(repo / "solutions"))
seen["processes"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
seen["capabilities"] = [line.split()[1] for line in open("/proc/self/status") if line.startswith("CapEff")][0]
seen["limits"] = [resource.getrlimit(kind)[0] for kind in (resource.RLIMIT_AS, resource.RLIMIT_NPROC, resource.RLIMIT_FSIZE, resource.RLIMIT_CORE)]
print(json.dumps(seen))
"""


@pytest.mark.sandbox
@linux_only
def test_a_box_sees_and_changes_only_what_it_may(box, tmp_path, monkeypatch):
    home, folder = tmp_path / "home", tmp_path / "box"
    home.mkdir(), folder.mkdir()
    secret = home / ".netrc"
    secret.write_text("machine hub login me password hunter2")
    given = folder / "submission.ipynb"
    given.write_text("{}")
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    monkeypatch.setenv("HOME", str(home))
    before = _digest(paths.PACKAGE_DIR)
    args = (str(paths.REPO_ROOT), str(home), str(secret), str(server.getsockname()[1]), str(given))
    seen = _run_in(box.with_hidden([paths.solutions_dir()]), PROBE, folder, *args, readonly=(given,))
    assert seen["read workbook"] and seen["write workbook"] == 30  # EROFS: read-only
    assert seen["write own home"] == seen["write own tmp"] == seen["write own folder"] == "ok"
    assert seen["home"] == sandbox.HOME and seen["tmpdir"] == "/tmp"
    assert seen["write the given file"] == 30 and given.read_text() == "{}"
    assert seen["write the real home"] == 2 and seen["read the real home"] == 2  # ENOENT: not in the box at all
    assert seen["write /etc"] in (13, 30)
    assert seen["connect to the host"] == 111 and seen["connect outside"] == 101  # refused; network unreachable
    with pytest.raises(TimeoutError):
        server.accept()  # the host's own loopback saw nothing
    assert seen["solutions"] == []
    assert len(seen["processes"]) <= 3  # its own process ids: bubblewrap's init, the confiner's exec, this one
    assert seen["capabilities"] == "0000000000000000"
    assert seen["limits"] == [SMALL.memory_bytes, SMALL.processes, SMALL.file_bytes, 0]
    if os.geteuid() == 0:
        assert seen["uid"] >= sandbox.FIRST_BOX_UID  # not root: a user of its own
    assert sorted(path.name for path in home.iterdir()) == [".netrc"]
    assert sorted(path.name for path in folder.iterdir()) == ["mine.txt", "probe.py", "submission.ipynb"]
    assert _digest(paths.PACKAGE_DIR) == before


@pytest.mark.sandbox
@linux_only
def test_an_unprivileged_box_works_too(box, tmp_path):
    """What a non-root grader gets (bubblewrap in a user namespace); as root, the same command line is forced."""
    unprivileged = dataclasses.replace(box, privileged=False)
    seen = _run_in(unprivileged, PROBE, tmp_path, str(paths.REPO_ROOT), "/nonexistent", "/nonexistent/x", "9",
                   str(tmp_path / "probe.py"))
    assert seen["write workbook"] == 30 and seen["write own home"] == "ok" and seen["connect outside"] == 101
    assert seen["uid"] == os.getuid() and seen["capabilities"] == "0000000000000000"


LIMITS_PROBE = """\
import json, os, time
from pathlib import Path
seen = {}
try:
    Path("big.bin").write_bytes(bytes(2 * 2**20))
    seen["file"] = "ok"
except OSError as exc:
    seen["file"] = exc.errno
try:
    blob = bytearray(3 * 2**30)
    seen["memory"] = "ok"
except MemoryError:
    seen["memory"] = "MemoryError"
children = []
try:
    while len(children) < 500:
        pid = os.fork()
        if pid == 0:
            time.sleep(5)
            os._exit(0)
        children.append(pid)
except OSError as exc:
    seen["fork"] = [exc.errno, len(children)]
print(json.dumps(seen))
"""


@pytest.mark.sandbox
@linux_only
def test_a_box_limits_file_size_memory_and_processes(box, tmp_path):
    tight = dataclasses.replace(box, limits=dataclasses.replace(SMALL, file_bytes=2**20, processes=16))
    seen = _run_in(tight, LIMITS_PROBE, tmp_path)
    assert seen["file"] == 27  # EFBIG
    assert seen["memory"] == "MemoryError"
    assert seen["fork"][0] == 11 and seen["fork"][1] < 16  # EAGAIN before 16 processes
    assert (tmp_path / "big.bin").stat().st_size == 2**20


@pytest.mark.sandbox
@linux_only
def test_a_check_may_write_anywhere_in_its_submission_folder(box, tmp_path):
    """Checks save files under paths.work_dir(), the submission's build folder, as notebook 01's hidden tests do."""
    env = grading.grading_environment(tmp_path)
    answer = "from course_utils.ground import paths\n(paths.work_dir('nb01') / 'saved.bin').write_bytes(b'x')"
    result = evaluate("", answer, "", timeout=60, workdir=tmp_path / "checks" / "a", env=env, sandbox=box.within(tmp_path))
    assert result.passed, result.message
    assert (tmp_path / "build" / "work" / "nb01" / "saved.bin").read_bytes() == b"x"
    outside = evaluate("", answer, "", timeout=60, workdir=tmp_path / "checks" / "b", env=env, sandbox=box)
    assert not outside.passed  # without within(), a check box may write only in its own working folder
    assert "Permission denied" in outside.message or "Read-only file system" in outside.message


def test_folders_the_box_needs_are_never_hidden():
    """An assignment in the workbook's root must not hide the workbook, its package or data from the box."""
    hiding = Sandbox("/usr/bin/bwrap").with_hidden([paths.REPO_ROOT, paths.data_dir(), paths.solutions_dir()])
    command = hiding.command([sys.executable, "-c", "pass"], cwd=Path("/tmp/box"), writable=[Path("/tmp/box")])
    covered = [command[i + 1] for i, arg in enumerate(command) if arg == "--tmpfs"]
    assert covered == ["/dev/shm", "/tmp", sandbox.HOME, str(paths.solutions_dir().resolve())]
    assert command[command.index("--remount-ro") + 1] == str(paths.solutions_dir().resolve())
    assert command[-len(["--", sys.executable, "-c", "pass"]):] == ["--", sys.executable, "-c", "pass"]


def test_confine_sets_the_limits_then_runs_the_command(tmp_path):
    spec = json.dumps({"memory_bytes": 2**31, "file_bytes": 2**20, "processes": None, "uid": None})
    probe = "import resource; print([resource.getrlimit(k)[0] for k in (resource.RLIMIT_FSIZE, resource.RLIMIT_CORE)])"
    done = subprocess.run([sys.executable, "-m", "course_utils.course._confine", spec, "--", sys.executable, "-c", probe],
                          capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(paths.REPO_ROOT)},
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"[{2**20}, 0]"
    usage = subprocess.run([sys.executable, "-m", "course_utils.course._confine"], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(paths.REPO_ROOT)}, timeout=60)
    assert usage.returncode == 2 and "usage" in usage.stderr


def test_find_sandbox_says_why_there_is_none(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox.sys, "platform", "darwin")
    assert "needs Linux" in sandbox.find_sandbox().reason
    monkeypatch.setattr(sandbox.sys, "platform", "linux")
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    missing = sandbox.find_sandbox()
    assert not missing.confined and "apt-get install bubblewrap" in missing.reason
    fake = tmp_path / "bwrap"
    fake.write_text('#!/bin/sh\n[ "$1" = --help ] && exit 0\necho "bwrap: No permissions to create new namespace" >&2\n'
                    "exit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: str(fake))
    broken = sandbox.find_sandbox()
    assert not broken.confined and "No permissions to create new namespace" in broken.reason
    assert broken.describe().startswith("none (bubblewrap is installed but cannot make a box here")


def test_the_instructors_guide_states_the_limits_the_code_sets():
    text = (paths.REPO_ROOT / "docs" / "instructors.md").read_text("utf-8")
    limits = Limits()
    assert f"address space per process ({limits.memory_bytes // 2**30} GiB)" in text
    assert f"processes and threads ({limits.processes})" in text
    assert f"output included ({limits.file_bytes // 2**20} MiB), {limits.tmpfs_bytes // 2**20} MiB for each" in text
    assert f"prints more than {exercises.OUTPUT_LIMIT // 2**20} MiB" in text
    assert f"from {sandbox.FIRST_BOX_UID})" in text
    assert f"`Limits.total_memory_bytes` ({limits.total_memory_bytes // 2**30} GiB;" in text


@pytest.mark.sandbox
def test_the_box_explains_the_errors_it_causes(box):
    message = "OSError: [Errno 30] Read-only file system: '/work/x' (in the exercise cell, line 2: `...`)"
    assert box.explain(message).endswith("The grader runs your code in a sandbox: files outside its own folder "
                                         "are read-only.")
    assert box.explain("AssertionError: wrong") == "AssertionError: wrong"
    assert sandbox.unconfined("test").explain(message) == message


# --- grading refuses to run unconfined, unless told ------------------------------------------------------------------


def _student(answers: dict[str, str]) -> object:
    nb = make_student_notebook(grading_solution())
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.metadata.get("nbgrader", {}).get("solution") and grade_id in answers:
            cell.source = answers[grade_id]
    return nb


def _write(nb, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_notebook(nb, path)
    return path


ANSWERS = {grade_id: "\n".join(line for line in source.split("\n") if "### " not in line)
           for grade_id, source in GRADING_SOLUTIONS.items()}


def test_grading_without_a_sandbox_needs_no_sandbox_and_says_so(tmp_path, monkeypatch, capsys):
    solution = _write(grading_solution(), tmp_path / "solutions" / GRADING_NAME)
    subs = tmp_path / "subs"
    _write(_student(ANSWERS), subs / "ann.ipynb")
    monkeypatch.setattr(grading, "find_sandbox", lambda: sandbox.unconfined("bubblewrap is not installed"))
    with pytest.raises(GradingError, match="no sandbox for the submissions: bubblewrap is not installed.*--no-sandbox"):
        grade_submissions(solution, subs, tmp_path / "out", run=False, log=None)
    assert not (tmp_path / "out").exists()
    assert main(["grade", str(solution), str(subs), "--out", str(tmp_path / "out"), "--skip-run"]) == 2
    assert "pass --no-sandbox" in capsys.readouterr().err
    assert main(["grade", str(solution), str(subs), "--out", str(tmp_path / "out"), "--skip-run", "--no-sandbox"]) == 0
    shown = capsys.readouterr().out
    assert "sandbox: none (--no-sandbox: student code ran as the grader's user (bubblewrap is not installed))" in shown
    (row,) = csv.DictReader((tmp_path / "out" / "gradebook.csv").open(encoding="utf-8"))
    assert (row["total"], row["run"]) == ("4", "not run")
    assert row["sandbox"] == "none (--no-sandbox: student code ran as the grader's user (bubblewrap is not installed))"


# --- hostile submissions ------------------------------------------------------------------------------------------

HOSTILE = {  # student: the code that replaces the first exercise's answer (the others stay unwritten)
    "vandal": """\
import pathlib, shutil
import course_utils
shutil.rmtree({subs!r}, ignore_errors=True)  # every other submission, if it could see them
for target in [pathlib.Path({home!r}) / "pwned.txt", pathlib.Path.home() / "pwned.txt"]:
    try:
        target.write_text("pwned")
    except OSError:
        pass
pathlib.Path(course_utils.__file__).write_text("raise SystemExit('grader broken')")  # the workbook itself""",
    "caller": """\
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=5).sendall(b"answers, please")
except OSError:
    pass
socket.create_connection(("192.0.2.1", 80), timeout=5)""",
    "hog": "blocks = []\nwhile True:\n    blocks.append(bytearray(64 * 2**20))",
    "forker": "import os\nwhile True:\n    os.fork()",
    "looper": "while True:\n    pass",
    "shouter": 'for _ in range(24):\n    print("x" * 2**20)',
}
EXPECTED_MESSAGES = {
    "vandal": "Read-only file system",
    "caller": "Network is unreachable",
    "hog": "MemoryError",
    "forker": "Resource temporarily unavailable",
    "looper": "timed out after 10 s",
    "shouter": "more than the 8,388,608 an exercise may print",
}


@pytest.mark.sandbox
@pytest.mark.slow
@linux_only
def test_hostile_submissions_get_nothing_and_change_nothing(box, tmp_path, monkeypatch):
    solution = _write(grading_solution(), tmp_path / "solutions" / GRADING_NAME)
    subs, home, scratch = tmp_path / "subs", tmp_path / "home", tmp_path / "scratch"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    values = {"subs": str(subs), "home": str(home), "port": server.getsockname()[1]}
    for name in ("a-good", "z-good"):
        _write(_student(ANSWERS), subs / f"{name}.ipynb")
    for name, attack in HOSTILE.items():
        first = next(iter(GRADING_SOLUTIONS))
        nb = _student({first: attack.format(**values) + "\n\n" + ANSWERS[first]})
        nb.cells.insert(4, code(attack.format(**values)))  # the whole-notebook run meets it too
        _write(nb, subs / f"{name}.ipynb")
    (subs / "broken.ipynb").write_text('{"cells": [', encoding="utf-8")
    before, workbook = _digest(subs), _digest(paths.PACKAGE_DIR)
    alone = tmp_path / "alone"
    _write(_student(ANSWERS), alone / "a-good.ipynb")
    baseline = grade_submissions(solution, alone, tmp_path / "out-alone", timeout=60, check_timeout=30, sandbox=box,
                                 log=None)
    lines: list[str] = []
    grades = grade_submissions(solution, subs, tmp_path / "out", timeout=30, check_timeout=10, jobs=2,
                               scratch_dir=scratch, sandbox=box, log=lines.append)
    by_student = {grade.student: grade for grade in grades}
    for name in ("a-good", "z-good"):  # graded beside the hostile ones exactly as alone
        assert [(e.points, e.reason) for e in by_student[name].exercises] == [
            (e.points, e.reason) for e in baseline[0].exercises
        ] == [(2, PASSED), (1, PASSED), (1, PASSED)]
        assert by_student[name].run.ok
    for name, message in EXPECTED_MESSAGES.items():
        grade = by_student[name]
        assert grade.total == 0, (name, grade)
        first, *rest = grade.exercises
        expected = {"looper": TIMED_OUT, "shouter": TOO_MUCH_OUTPUT}.get(name, CRASHED)
        assert first.reason == expected and message in first.message, (name, first)
        assert [e.reason for e in rest] == [NOT_WRITTEN, NOT_WRITTEN], name
        assert grade.run.ok == (name == "shouter"), (name, grade.run)  # printing alone does not stop a notebook
    assert by_student["vandal"].exercises[0].message.endswith("files outside its own folder are read-only.")
    assert by_student["broken"].total == 0 and by_student["broken"].problem.startswith(NOT_JSON)
    # Nothing outside the boxes changed: submissions, the grader's home, the workbook, the host's network.
    assert _digest(subs) == before
    assert list(home.iterdir()) == []
    assert _digest(paths.PACKAGE_DIR) == workbook
    with pytest.raises(TimeoutError):
        server.accept()
    assert list(scratch.iterdir()) == []
    assert _leftover_processes(str(scratch)) == []
    assert any(line.startswith("sandbox: bubblewrap") for line in lines)
    feedback = (tmp_path / "out" / "feedback" / "shouter.md").read_text("utf-8")
    assert "printed too much" in feedback and "print a summary" in feedback


def _digest(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file() and "__pycache__" not in path.parts}


def _leftover_processes(prefix: str) -> list[int]:
    psutil = pytest.importorskip("psutil")
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("COURSE_BUILD_DIR", "").startswith(prefix):
                found.append(process.pid)
        except (psutil.Error, OSError):
            continue
    return found


# --- what a two-rank launch needs, and the memory of a box as a whole -------------------------------------------------

DDP_PROBE = """\
import json, socket
import torch, torch.distributed as dist
dist.init_process_group("gloo")
total = torch.tensor([dist.get_rank() + 1.0])
dist.all_reduce(total)
print(json.dumps({"rank": dist.get_rank(), "sum": total.item(), "host": socket.gethostbyname(socket.gethostname())}))
dist.barrier()
dist.destroy_process_group()
"""


@linux_only
def test_a_two_rank_launch_on_the_loopback_finishes_in_a_box(box, tmp_path):
    """torchrun --standalone connects its ranks through the host name: the box's own resolves to the loopback.

    Without it (the host's /etc/hosts, which does not know the box's name) the ranks waited for ever.
    """
    script = tmp_path / "ddp_probe.py"
    script.write_text(DDP_PROBE, encoding="utf-8")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    process = box.popen(command, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, writable=[tmp_path],
                        readonly=[script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=180)
    finally:
        exercises.kill_tree(process)
    assert process.returncode == 0, err[-2000:]
    # The ranks share one stdout: their lines can interleave, so each (flat) object is found wherever it lies.
    ranks = sorted((json.loads(found) for found in re.findall(r'\{"rank"[^{}]*\}', out)), key=lambda r: r["rank"])
    assert ranks == [{"rank": 0, "sum": 3.0, "host": "127.0.0.1"}, {"rank": 1, "sum": 3.0, "host": "127.0.0.1"}]


MEMORY_PROBE = """\
import subprocess, sys, time
# Three processes of 300 MiB each: every one is far below the per-process limit, all three together are not.
child = "block = bytearray(300 * 2**20); import time; time.sleep(60)"
children = [subprocess.Popen([sys.executable, "-c", child]) for _ in range(3)]
time.sleep(60)
"""


@linux_only
def test_a_box_is_stopped_when_its_processes_together_use_too_much_memory(box, tmp_path):
    limits = dataclasses.replace(SMALL, total_memory_bytes=600 * 2**20)
    tight = dataclasses.replace(box, limits=limits)
    script = tmp_path / "probe.py"
    script.write_text(MEMORY_PROBE, encoding="utf-8")
    process = tight.popen([sys.executable, str(script)], cwd=tmp_path, env=os.environ, writable=[tmp_path],
                          readonly=[script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watch = tight.memory_watch()
    timed_out = exercises.wait_or_kill(process, 50, watch)
    assert not timed_out and watch.exceeded
    assert 600 * 2**20 < watch.peak_bytes < 1200 * 2**20  # stopped while the third block was being written
    assert process.returncode is not None
    assert "all its processes together used more than 600 MiB of memory" in watch.reason()
    assert "600 MiB for all together" in tight.describe()


@pytest.mark.slow
@linux_only
def test_an_allocation_past_the_limit_of_a_submission_fails_with_its_reason(box, tmp_path):
    limits = dataclasses.replace(SMALL, memory_bytes=4 * 2**30, total_memory_bytes=2**30)
    tight = dataclasses.replace(box, limits=limits)
    solution = _write(grading_solution(), tmp_path / "solutions" / GRADING_NAME)
    first = next(iter(GRADING_SOLUTIONS))
    greedy = "block = bytearray(int(1.5 * 2**30))  # one process, below its own limit, above the submission's"
    nb = _student({**ANSWERS, first: greedy + "\n\n" + ANSWERS[first]})
    nb.cells.insert(4, code(greedy))  # the whole-notebook run meets it too
    _write(nb, tmp_path / "subs" / "greedy.ipynb")
    (grade,) = grade_submissions(solution, tmp_path / "subs", tmp_path / "out", timeout=120, check_timeout=60,
                                 sandbox=tight, log=None)
    assert grade.run.status == "memory" and grade.run.summary() == "stopped at cell 5: over the memory limit"
    first_grade, *rest = grade.exercises
    assert first_grade.reason == grading.OVER_MEMORY and first_grade.points == 0
    assert [e.reason for e in rest] == [PASSED, PASSED]
    feedback = (tmp_path / "out" / "feedback" / "greedy.md").read_text("utf-8")
    assert "all its processes together used more than 1 GiB of memory, the limit for a whole submission" in feedback
    assert "it was stopped while running cell 5" in feedback
    assert f"`{first}`: {grading.OVER_MEMORY}" in feedback


@pytest.mark.slow
@linux_only
def test_notebook_03_graded_in_the_sandbox_runs_to_its_end(tmp_path):
    """The whole notebook, DDP launch (cell 82, two ranks on the loopback) included, under the default limits."""
    box = sandbox.find_sandbox()
    solution = paths.solutions_dir() / "03_pretraining_a_gpt.ipynb"
    _write(read_notebook(solution), tmp_path / "subs" / "own-solution.ipynb")
    (grade,) = grade_submissions(solution, tmp_path / "subs", tmp_path / "out", sandbox=box, log=None)
    assert grade.run.ok, grade.run
    assert [e.reason for e in grade.exercises] == [PASSED] * len(grade.exercises)
    # Measured here, beside the limit it must stay under (see sandbox.TOTAL_MEMORY_BYTES).
    print(f"notebook 03 in the box: {grade.run.seconds:.0f} s, {grade.run.memory_bytes / 2**20:.0f} MiB at most")
    assert 0 < grade.run.memory_bytes < box.limits.total_memory_bytes
