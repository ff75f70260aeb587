"""The release: solution notebooks become student notebooks, the conventions are enforced, nothing leaks."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nb_builders import (
    EXAMPLE_SOLUTION,
    code,
    example_solution,
    header_cells,
    markdown,
    notebook,
    solution_meta,
)

from course_utils.course.release import (
    MarkerError,
    ReleaseError,
    find_regions,
    make_student_notebook,
    notebook_text,
    read_notebook,
    release,
    repo_settings,
    setup_cell_source,
    solution_notebooks,
    student_source,
    validate_solution_notebook,
    without_nbval_markers,
    write_notebook,
)
from course_utils.ground import paths

REAL_SOLUTIONS = solution_notebooks(paths.solutions_dir())
NO_REAL_NOTEBOOKS = "solutions/ has no NN_*.ipynb notebooks yet"


# --- marker replacement ----------------------------------------------------------------------------------------


def test_solution_region_becomes_stub_at_the_marker_indentation():
    source = (
        "def total(values):\n"
        "    result = 0\n"
        "    for value in values:\n"
        "        ### BEGIN SOLUTION\n"
        "        result += value\n"
        "        ### END SOLUTION\n"
        "    return result"
    )
    assert student_source(source) == (
        "def total(values):\n"
        "    result = 0\n"
        "    for value in values:\n"
        "        # YOUR CODE HERE\n"
        "        raise NotImplementedError()\n"
        "    return result"
    )


def test_top_level_region_and_several_regions_in_one_cell():
    source = "### BEGIN SOLUTION\nx = 1\n### END SOLUTION\ny = 2\n  ### BEGIN SOLUTION\n  z = 3\n  ### END SOLUTION"
    assert student_source(source) == (
        "# YOUR CODE HERE\nraise NotImplementedError()\ny = 2\n  # YOUR CODE HERE\n  raise NotImplementedError()"
    )


def test_markdown_solution_becomes_your_answer_here():
    source = "Why does it fit?\n\n### BEGIN SOLUTION\nBecause 4 bytes times 1e9 is 4 GB.\n### END SOLUTION"
    assert student_source(source, "markdown") == "Why does it fit?\n\nYOUR ANSWER HERE"


def test_hidden_tests_are_removed_and_visible_lines_kept():
    source = "check(f)\n### BEGIN HIDDEN TESTS\nassert f(0) == 0\n### END HIDDEN TESTS\nprint('done')"
    assert student_source(source) == "check(f)\nprint('done')"


def test_hidden_tests_at_the_end_leave_no_blank_tail():
    source = "check(f)\n\n### BEGIN HIDDEN TESTS\nassert f(0) == 0\n### END HIDDEN TESTS\n"
    assert student_source(source) == "check(f)"


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("### BEGIN SOLUTION\nx = 1", "never closed"),
        ("x = 1\n### END SOLUTION", "without a matching"),
        ("### BEGIN SOLUTION\n### BEGIN HIDDEN TESTS\n### END HIDDEN TESTS\n### END SOLUTION", "nested"),
        ("### BEGIN SOLUTION\nx = 1\n### END HIDDEN TESTS", "without a matching"),
        ("## BEGIN SOLUTION\nx = 1\n## END SOLUTION", "looks like a marker"),
        ("### BEGIN SOLUTION here\nx = 1\n### END SOLUTION", "looks like a marker"),
        ("### begin hidden tests\nassert x\n### end hidden tests", "looks like a marker"),
    ],
)
def test_malformed_markers_raise_a_clear_error(source, needle):
    with pytest.raises(MarkerError, match=needle):
        find_regions(source)


def test_malformed_markers_name_the_cell_in_the_notebook():
    nb = example_solution()
    nb.cells[5].source = nb.cells[5].source.replace("### END SOLUTION", "")
    with pytest.raises(MarkerError, match=r"cell 5 .*line 3.*never closed"):
        make_student_notebook(nb)


_plain_line = st.text(alphabet="abcxyz =+()0123456789", min_size=0, max_size=30)


@settings(max_examples=60, deadline=None)
@given(
    before=st.lists(_plain_line, max_size=4),
    inside=st.lists(_plain_line, min_size=1, max_size=4),
    after=st.lists(_plain_line, max_size=4),
    indent=st.sampled_from(["", "    ", "\t"]),
)
def test_stub_replaces_exactly_the_region(before, inside, after, indent):
    region = [
        f"{indent}### BEGIN SOLUTION",
        *[f"{indent}SECRET{line}" for line in inside],
        f"{indent}### END SOLUTION",
    ]
    result = student_source("\n".join([*before, *region, *after]))
    assert "SECRET" not in result
    expected = [*before, f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError()", *after]
    while not expected[-1].strip():
        expected.pop()
    assert result == "\n".join(expected)
    assert student_source(result) == result  # a released notebook releases to itself


# --- the student notebook --------------------------------------------------------------------------------------


def _colab_run(nb):
    """``nb`` as Colab and papermill would leave it: outputs, counts, their metadata."""
    nb = copy.deepcopy(nb)
    nb.metadata.update(
        {
            "colab": {"provenance": []},
            "accelerator": "GPU",
            "gpuClass": "standard",
            "widgets": {"application/vnd.jupyter.widget-state+json": {"state": {}}},
            "papermill": {"duration": 1.0},
        }
    )
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7"}
    for number, cell in enumerate(nb.cells):
        cell.metadata.update(
            {
                "colab": {"base_uri": "https://localhost:8080/"},
                "id": "Xq12",
                "executionInfo": {"status": "ok"},
                "outputId": "abc",
                "papermill": {"status": "ok"},
                "execution": {"iopub.status.busy": "2024"},
            }
        )
        if cell.cell_type == "code":
            cell.execution_count = number
            cell.outputs = [nbformat.v4.new_output("stream", text="hello\n")]
    return nb


def test_outputs_counts_and_colab_run_state_are_cleared_but_the_gpu_runtime_is_kept():
    student = make_student_notebook(_colab_run(example_solution()))
    assert set(student.metadata) == {"kernelspec", "language_info", "accelerator", "colab"}
    assert student.metadata["accelerator"] == "GPU"
    assert student.metadata["colab"] == {"gpuType": "T4", "provenance": []}  # no gpuClass, no provenance of a run
    assert "version" not in student.metadata["language_info"]
    for cell in student.cells:
        assert not {"colab", "id", "executionInfo", "outputId", "papermill", "execution"} & set(cell.metadata)
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_tags_nbgrader_metadata_and_cell_ids_are_kept():
    solution = example_solution()
    student = make_student_notebook(_colab_run(solution))
    assert [cell.id for cell in student.cells] == [cell.id for cell in solution.cells]
    assert student.cells[2].metadata["tags"] == ["parameters"]
    assert student.cells[3].metadata["tags"] == ["imports"]
    assert student.cells[5].metadata["nbgrader"] == solution.cells[5].metadata["nbgrader"]
    assert student.cells[6].metadata["nbgrader"]["points"] == 2


def test_check_cells_may_fail_in_the_student_notebook():
    student = make_student_notebook(example_solution())
    assert student.cells[6].metadata["tags"] == ["raises-exception"]  # Run All goes past an unsolved exercise
    assert [cell.metadata.get("tags") for cell in student.cells].count(["raises-exception"]) == 1


def test_badge_points_to_notebooks():
    student = make_student_notebook(example_solution())
    title = student.cells[0].source
    assert "/blob/main/notebooks/01_example.ipynb)" in title
    assert "/solutions/" not in title


def test_hidden_tests_and_solution_are_gone_from_the_student_notebook():
    text = notebook_text(make_student_notebook(example_solution()))
    assert "return len(text.split())" not in text
    assert "spaced   out" not in text
    assert "BEGIN" not in text and "END SOLUTION" not in text
    assert 'checks.passed(\\"word_count counts words\\")' in text


def test_nbval_markers_are_left_out_of_the_student_notebook():
    solution = example_solution()
    marked = next(cell for cell in solution.cells if "NBVAL_CHECK_OUTPUT" in cell.source)
    student = make_student_notebook(solution)
    released = next(cell for cell in student.cells if cell.id == marked.id)
    assert "NBVAL" not in notebook_text(student)
    assert released.source == marked.source.replace("# NBVAL_CHECK_OUTPUT\n", "")
    assert without_nbval_markers("x = 1  # NBVAL_CHECK_OUTPUT is only a marker alone on its line") == (
        "x = 1  # NBVAL_CHECK_OUTPUT is only a marker alone on its line")


def test_make_student_notebook_is_pure_and_deterministic():
    solution = _colab_run(example_solution())
    before = notebook_text(solution)
    first = notebook_text(make_student_notebook(solution))
    second = notebook_text(make_student_notebook(copy.deepcopy(solution)))
    assert first == second
    assert notebook_text(solution) == before
    assert first.endswith("}\n") and first.startswith('{\n "cells": [\n  {\n')


# --- the setup cell ----------------------------------------------------------------------------------------------


def _run_setup(source, monkeypatch, *, on_colab, versions=None, after_install=None, imported=(), printed=None):
    """Execute the setup cell with git, pip and chdir replaced by a recorder; the commands it would run.

    ``versions`` fakes Colab's installed versions (importlib.metadata), ``after_install`` what pip changes,
    ``imported`` the distributions this session has imported; the cell's files are read from this repository.
    """
    import builtins
    import importlib.metadata

    calls = []
    state = dict(versions or {})

    def fake_run(cmd, **kwargs):
        calls.append(list(cmd))
        if cmd[:4] == [sys.executable, "-m", "pip", "install"]:
            state.update(after_install or {})

    def fake_version(name):
        name = re.sub(r"[-_.]+", "-", name).lower()
        if versions is None:
            return real_version(name)
        if name not in state:
            raise importlib.metadata.PackageNotFoundError(name)
        return state[name]

    def fake_open(path, *args, **kwargs):
        path = str(path).replace("/content/llm-workbook", str(paths.REPO_ROOT))
        return builtins.open(path, *args, **kwargs)

    real_version = importlib.metadata.version
    with monkeypatch.context() as patch:
        patch.setattr(subprocess, "run", fake_run)
        patch.setattr("os.chdir", lambda path: calls.append(["chdir", path]))
        patch.setattr("os.path.isdir", lambda path: False)
        patch.setattr(sys, "path", list(sys.path))
        patch.setattr(importlib.metadata, "version", fake_version)
        if versions is not None:
            patch.setattr(importlib.metadata, "packages_distributions",
                          lambda: {f"mod_{dist}": [dist] for dist in imported})
            for dist in imported:
                patch.setitem(sys.modules, f"mod_{dist}", types.ModuleType(f"mod_{dist}"))
        if on_colab:
            patch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
        else:
            patch.delitem(sys.modules, "google.colab", raising=False)
        kernel = types.SimpleNamespace(do_shutdown=lambda restart: calls.append(["restart", restart]))
        patch.setattr("IPython.get_ipython", lambda: types.SimpleNamespace(kernel=kernel))
        if printed is not None:
            patch.setattr(builtins, "print", lambda *a, **k: printed.append(" ".join(map(str, a))))
        exec(compile(source, "<setup cell>", "exec"), {"open": fake_open})
    return calls


def _constraints(install):
    return [install[i + 1] for i, arg in enumerate(install) if arg == "-c"]


def test_setup_cell_clones_and_installs_on_colab(monkeypatch, tmp_path):
    settings = repo_settings()
    clone, install, chdir = _run_setup(setup_cell_source(), monkeypatch, on_colab=True)
    assert clone[:2] == ["git", "clone"] and "--depth" in clone
    assert (
        f"https://github.com/{settings['github_repo']}.git" in clone and clone[-1] == "/content/llm-workbook"
    )
    assert install == [sys.executable, "-m", "pip", "install", "-q", "-c", "/tmp/keep_colab.txt",
                       "-c", "/content/llm-workbook/constraints/colab.txt", "-e", "/content/llm-workbook"]
    assert chdir == ["chdir", "/content/llm-workbook"]


COLAB = {"torch": "2.11.0+cu128", "torchvision": "0.26.0+cu128", "ipython": "7.34.0", "traitlets": "5.7.1",
         "ipywidgets": "7.7.1", "numpy": "2.1.3"}


def test_setup_cell_pins_the_kernel_and_torch_it_finds(monkeypatch):
    _run_setup(setup_cell_source(), monkeypatch, on_colab=True, versions=COLAB)
    pins = set(Path("/tmp/keep_colab.txt").read_text().split())
    assert {"torch==2.11.0+cu128", "torchvision==0.26.0+cu128", "ipython==7.34.0", "traitlets==5.7.1"} == pins


def test_setup_cell_installs_unsloth_where_colabs_torch_is_in_its_range(monkeypatch):
    printed = []
    calls = _run_setup(setup_cell_source(("gpu",)), monkeypatch, on_colab=True, versions=COLAB, printed=printed)
    assert calls[1][-1] == "/content/llm-workbook[gpu]"
    assert _constraints(calls[1]) == ["/tmp/keep_colab.txt", "/content/llm-workbook/constraints/colab-gpu.txt"]
    assert not any("Unsloth" in line for line in printed)


def test_setup_cell_installs_without_unsloth_outside_its_torch_range(monkeypatch):
    printed = []
    newer = {**COLAB, "torch": "2.15.0+cu128"}
    calls = _run_setup(setup_cell_source(("gpu",)), monkeypatch, on_colab=True, versions=newer, printed=printed)
    assert calls[1][-1] == "/content/llm-workbook"  # no [gpu]: the PEFT path
    assert _constraints(calls[1]) == ["/tmp/keep_colab.txt", "/content/llm-workbook/constraints/colab.txt"]
    (line,) = [line for line in printed if "Unsloth" in line]
    assert "2.15.0" in line and "<2.15" in line and "PEFT" in line


def test_setup_cell_restarts_once_when_the_install_changes_an_imported_package(monkeypatch):
    marker = Path("/tmp/llm-workbook-restarted")
    marker.unlink(missing_ok=True)
    printed = []
    upgrade = {"after_install": {"numpy": "2.2.0"}, "imported": ("numpy",)}
    calls = _run_setup(setup_cell_source(), monkeypatch, on_colab=True, versions=COLAB, printed=printed, **upgrade)
    assert ["restart", True] in calls and marker.exists()
    assert any("numpy 2.1.3 -> 2.2.0" in line and "restarting" in line for line in printed)
    # the second run (after the restart) changes nothing: no restart
    calls = _run_setup(setup_cell_source(), monkeypatch, on_colab=True, versions={**COLAB, "numpy": "2.2.0"},
                       imported=("numpy",))
    assert not any(call[0] == "restart" for call in calls)
    # and even if something still changes, it never restarts twice
    calls = _run_setup(setup_cell_source(), monkeypatch, on_colab=True, versions=COLAB, **upgrade)
    assert not any(call[0] == "restart" for call in calls)
    marker.unlink()


def test_setup_cell_does_not_restart_when_nothing_imported_changes(monkeypatch):
    Path("/tmp/llm-workbook-restarted").unlink(missing_ok=True)
    calls = _run_setup(setup_cell_source(), monkeypatch, on_colab=True, versions=COLAB,
                       after_install={"datasets": "5.2.0"}, imported=("numpy",))
    assert not any(call[0] == "restart" for call in calls)


def test_setup_cell_does_nothing_outside_colab(monkeypatch):
    assert _run_setup(setup_cell_source(), monkeypatch, on_colab=False) == []


def test_setup_cell_has_no_magics_and_rejects_odd_extras():
    assert not any(line.lstrip().startswith(("!", "%")) for line in setup_cell_source().splitlines())
    with pytest.raises(ValueError, match="optional-dependencies"):
        setup_cell_source(("gpu; rm -rf /",))


# --- validation --------------------------------------------------------------------------------------------------

PATH = Path("solutions/01_example.ipynb")


def test_the_example_solution_is_valid():
    assert validate_solution_notebook(example_solution(), PATH) == []
    assert validate_solution_notebook(read_notebook(EXAMPLE_SOLUTION), EXAMPLE_SOLUTION) == []


def _break(mutate):
    nb = example_solution()
    mutate(nb)
    return nb


def _set(cell_index, **fields):
    def mutate(nb):
        for key, value in fields.items():
            nb.cells[cell_index][key] = value

    return mutate


def _meta(cell_index, key, value):
    def mutate(nb):
        nb.cells[cell_index].metadata["nbgrader"][key] = value

    return mutate


def _hf_output(nb):
    nb.cells[8].outputs = [nbformat.v4.new_output("stream", text="token hf_" + "a1B2" * 9 + "\n")]


BROKEN = {
    "title": (_set(0, source="# Example\n"), "cell 0: start with a markdown title"),
    "badge missing": (_set(0, source="# 01 · Example\n"), "add the Colab badge"),
    "badge elsewhere": (
        lambda nb: nb.cells[0].update(source=nb.cells[0].source.replace("01_example", "02_x")),
        "add the Colab badge",
    ),
    "setup edited": (
        lambda nb: nb.cells[1].update(source=nb.cells[1].source + "\nprint(1)"),
        "canonical setup",
    ),
    "no parameters tag": (lambda nb: nb.cells[2].metadata.pop("tags"), "tagged 'parameters'"),
    "profile not first": (_set(2, source='TEXT = "a"\nPROFILE = "auto"'), 'must be PROFILE = "auto"'),
    "profile not auto": (_set(2, source='PROFILE = "tiny"'), 'must be PROFILE = "auto"'),
    "computed parameter": (_set(2, source='PROFILE = "auto"\nSTEPS = len("abc")'), "plain literals"),
    "no imports tag": (lambda nb: nb.cells[3].metadata.pop("tags"), "tagged 'imports'"),
    "work in imports": (
        _set(3, source="from course_utils import checks\nx = checks.call(len, 'a')"),
        "imports only",
    ),
    "no solution metadata": (
        lambda nb: nb.cells[5].metadata.pop("nbgrader"),
        "no nbgrader solution metadata",
    ),
    "no points": (_meta(6, "points", 0), "points > 0"),
    "duplicate grade_id": (_meta(6, "grade_id", "nb01-word-count"), "already used"),
    "foreign grade_id": (_meta(5, "grade_id", "nb02-word-count"), "must start with 'nb01-'"),
    "check not next": (
        lambda nb: nb.cells.insert(6, markdown("Now check it:")),
        "directly followed by its check",
    ),
    "stray marker": (
        _set(8, source="### BEGIN SOLUTION\nx = 1\n### END SOLUTION"),
        "no nbgrader solution metadata",
    ),
    "hidden in plain cell": (
        _set(8, source="### BEGIN HIDDEN TESTS\nx = 1\n### END HIDDEN TESTS"),
        "hidden tests belong in a check cell",
    ),
    "unbalanced": (
        lambda nb: nb.cells[5].update(source=nb.cells[5].source.replace("### END SOLUTION", "")),
        "never closed",
    ),
    "solution without markers": (_set(5, source="def word_count(text):\n    return 0"), "without '### BEGIN"),
    "token in output": (_hf_output, "looks like a Hugging Face token"),
    "token in source": (_set(8, source="TOKEN = 'hf_" + "x" * 34 + "'"), "looks like a Hugging Face token"),
    "check may fail": (
        lambda nb: nb.cells[6].metadata.update(tags=["raises-exception"]),
        "a check must pass",
    ),
    "duplicate cell id": (lambda nb: nb.cells[4].update(id="cell-5"), "used twice"),
    "too short": (lambda nb: nb.update(cells=nb.cells[:2]), "starts with title, setup"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_validation_names_each_problem(case):
    mutate, expected = BROKEN[case]
    problems = validate_solution_notebook(_break(mutate), PATH)
    assert any(expected in problem for problem in problems), problems


def test_validation_checks_the_file_name_and_accepts_the_extras_setup():
    assert any(
        "NN_short_name" in p for p in validate_solution_notebook(example_solution(), Path("example.ipynb"))
    )
    nb = example_solution()
    nb.cells[1].source = setup_cell_source(("gpu",))
    assert validate_solution_notebook(nb, PATH) == []


def test_markdown_answers_need_metadata_but_no_check_cell():
    nb = example_solution()
    nb.cells.append(
        markdown(
            "Why?\n\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION",
            nbgrader={**solution_meta("nb01-why"), "grade": True, "points": 1},
        )
    )
    nb.cells[-1]["id"] = "cell-why"
    assert validate_solution_notebook(nb, PATH) == []
    assert make_student_notebook(nb).cells[-1].source == "Why?\n\nYOUR ANSWER HERE"


# --- release() on a folder ---------------------------------------------------------------------------------------


@pytest.fixture
def folders(tmp_path):
    solutions, notebooks = tmp_path / "solutions", tmp_path / "notebooks"
    solutions.mkdir()
    shutil.copy(EXAMPLE_SOLUTION, solutions / "01_example.ipynb")
    return solutions, notebooks


def test_release_writes_student_notebooks_then_is_in_sync(folders):
    solutions, notebooks = folders
    assert release(solutions, notebooks, check=True) == [notebooks / "01_example.ipynb"]
    assert not notebooks.exists()  # check writes nothing
    assert release(solutions, notebooks) == [notebooks / "01_example.ipynb"]
    student = read_notebook(notebooks / "01_example.ipynb")
    assert "raise NotImplementedError()" in student.cells[5].source
    assert release(solutions, notebooks, check=True) == []
    assert release(solutions, notebooks) == []


def test_release_check_sees_a_hand_edited_student_notebook(folders):
    solutions, notebooks = folders
    release(solutions, notebooks)
    target = notebooks / "01_example.ipynb"
    target.write_text(target.read_text().replace("YOUR CODE HERE", "my code"))
    assert release(solutions, notebooks, check=True) == [target]
    release(solutions, notebooks)
    assert "YOUR CODE HERE" in target.read_text()


def test_release_removes_stale_notebooks_only(folders):
    solutions, notebooks = folders
    notebooks.mkdir()
    (notebooks / "02_gone.ipynb").write_text("{}")
    (notebooks / "README.md").write_text("keep me")
    assert release(solutions, notebooks, check=True) == [
        notebooks / "01_example.ipynb",
        notebooks / "02_gone.ipynb",
    ]
    assert (notebooks / "02_gone.ipynb").exists()
    release(solutions, notebooks)
    assert sorted(path.name for path in notebooks.iterdir()) == ["01_example.ipynb", "README.md"]


def test_release_refuses_an_invalid_solution(folders):
    solutions, notebooks = folders
    nb = read_notebook(solutions / "01_example.ipynb")
    nb.cells[6].metadata["nbgrader"]["points"] = 0
    nbformat.write(nb, solutions / "03_broken.ipynb")
    with pytest.raises(ReleaseError, match=r"03_broken.ipynb: cell 6: check cell needs nbgrader points > 0"):
        release(solutions, notebooks)
    assert not notebooks.exists()


# --- the real repository -----------------------------------------------------------------------------------------


def _solution_lines(nb):
    """(lines inside solution regions, lines inside hidden-test regions, lines outside both), stripped."""
    inside: dict[str, set[str]] = {"solution": set(), "hidden": set()}
    outside: set[str] = set()
    for cell in nb.cells:
        lines = cell.source.split("\n")
        marked = set()
        for region in find_regions(cell.source):
            inside[region.kind].update(line.strip() for line in lines[region.begin + 1 : region.end])
            marked.update(range(region.begin, region.end + 1))
        outside.update(line.strip() for number, line in enumerate(lines) if number not in marked)
    return inside["solution"], inside["hidden"], outside


def leaked_lines(solution_nb, student_nb, *, solution_min=20, hidden_min=10) -> list[str]:
    """Substantive lines of solution or hidden regions (not also found outside them) that the student can read."""
    solution, hidden, outside = _solution_lines(solution_nb)
    secrets = {line for line in solution - outside if len(line) >= solution_min}
    secrets |= {line for line in hidden - outside if len(line) >= hidden_min}
    student_lines = {line.strip() for cell in student_nb.cells for line in cell.source.split("\n")}
    return sorted(secrets & student_lines)


def test_leak_detector_finds_a_leak():
    solution = example_solution()
    student = make_student_notebook(solution)
    assert leaked_lines(solution, student) == []
    student.cells[5].source += "\n    return len(text.split())"
    student.cells[6].source += "\n" + example_solution().cells[6].source.split("\n")[2]
    assert len(leaked_lines(solution, student)) == 2


def test_example_fixture_releases_without_leaks(folders):
    solutions, notebooks = folders
    release(solutions, notebooks)
    assert leaked_lines(read_notebook(EXAMPLE_SOLUTION), read_notebook(notebooks / "01_example.ipynb")) == []


@pytest.mark.skipif(not REAL_SOLUTIONS, reason=NO_REAL_NOTEBOOKS)
def test_notebooks_folder_is_in_sync_with_solutions():
    out_of_sync = release(check=True)
    assert out_of_sync == [], "Run `python -m course_utils release` and commit notebooks/: " + ", ".join(
        path.name for path in out_of_sync
    )


@pytest.mark.skipif(not REAL_SOLUTIONS, reason=NO_REAL_NOTEBOOKS)
@pytest.mark.parametrize("path", REAL_SOLUTIONS, ids=[path.name for path in REAL_SOLUTIONS])
def test_real_solution_notebook_is_valid(path):
    assert validate_solution_notebook(read_notebook(path), path) == []


@pytest.mark.skipif(not REAL_SOLUTIONS, reason=NO_REAL_NOTEBOOKS)
@pytest.mark.parametrize("path", REAL_SOLUTIONS, ids=[path.name for path in REAL_SOLUTIONS])
def test_no_solution_text_leaks_into_notebooks(path):
    student_path = paths.notebooks_dir() / path.name
    assert student_path.exists(), f"{student_path} is missing: run `python -m course_utils release`."
    assert leaked_lines(read_notebook(path), read_notebook(student_path)) == []


def test_a_notebook_without_exercises_is_valid():
    nb = notebook([*header_cells("07_other.ipynb"), code("x = 1")])
    assert validate_solution_notebook(nb, Path("07_other.ipynb")) == []


@pytest.mark.parametrize("folder", ["solutions", "notebooks"])
def test_every_notebook_opens_on_a_colab_gpu_and_keeps_colabs_torch(folder, monkeypatch):
    from course_utils.ground import paths

    names = [p.name for p in solution_notebooks()]
    for name in names:
        nb = read_notebook(paths.REPO_ROOT / folder / name)
        assert nb.metadata.get("accelerator") == "GPU" and nb.metadata["colab"]["gpuType"], name
        setup = nb.cells[1].source
        calls = _run_setup(setup, monkeypatch, on_colab=True)
        install = next(call for call in calls if call[:4] == [sys.executable, "-m", "pip", "install"])
        constraints = _constraints(install)
        assert "/tmp/keep_colab.txt" in constraints, name
        pins = Path("/tmp/keep_colab.txt").read_text().split()
        assert any(pin.startswith("torch==") for pin in pins), (name, pins)


def test_a_notebook_without_the_gpu_runtime_is_refused():
    solution = example_solution()
    for key in ("accelerator", "colab"):
        solution.metadata.pop(key, None)
    assert any("CPU runtime" in p for p in validate_solution_notebook(solution, "01_example.ipynb"))


# --- links between the notebooks ---------------------------------------------------------------------------------


def _pair(folder: Path, last_cell: str, mention: str = "") -> tuple[Path, Path]:
    """Two solution notebooks in ``folder``: 00 ends with ``last_cell`` and says ``mention`` in a markdown cell."""
    first, second = folder / "00_first.ipynb", folder / "01_second.ipynb"
    body = [markdown(mention)] if mention else []
    write_notebook(notebook([*header_cells(first.name, "First"), *body, markdown(last_cell)]), first)
    write_notebook(notebook([*header_cells(second.name, "Second"), markdown("The end.")]), second)
    return first, second


def test_a_notebook_must_end_with_the_link_to_the_next(tmp_path):
    first, second = _pair(tmp_path, "That is all.")
    assert validate_solution_notebook(read_notebook(first), first) == [
        "last cell: end the notebook with a markdown cell holding the line "
        "'**Next:** [01 · its title](01_second.ipynb)'."]
    assert validate_solution_notebook(read_notebook(second), second) == []  # the last one has no next
    first, _ = _pair(tmp_path, "**Next:** [01 · Second](01_second.ipynb)")
    assert validate_solution_notebook(read_notebook(first), first) == []
    first, _ = _pair(tmp_path, "**Next:** [01 · Second](../solutions/01_second.ipynb)")  # not the sibling file
    assert validate_solution_notebook(read_notebook(first), first) != []


@pytest.mark.parametrize(("mention", "problem"), [
    ("As notebook 01 shows.", "cell 4: make 'notebook 01' a link: [notebook 01](01_second.ipynb)."),
    ("Notebook 01's table.", "cell 4: make 'Notebook 01' a link: [Notebook 01](01_second.ipynb)."),
    ("As [notebook 01](../solutions/01_second.ipynb) shows.",
     "cell 4: the link [notebook 01](../solutions/01_second.ipynb) should point at 01_second.ipynb."),
    ("As [notebook 01](01_second.ipynb) shows, and `notebook 01` in code is left alone.", None),
])
def test_every_notebook_mention_in_markdown_is_a_link_to_its_file(tmp_path, mention, problem):
    first, _ = _pair(tmp_path, "**Next:** [01 · Second](01_second.ipynb)", mention)
    assert validate_solution_notebook(read_notebook(first), first) == ([problem] if problem else [])


def test_the_title_says_what_a_notebook_builds_on():
    nb = notebook([*header_cells("07_other.ipynb"), code("x = 1")])
    nb.cells[0].source = nb.cells[0].source.replace("Builds on: nothing.\n\n", "")
    assert validate_solution_notebook(nb, Path("07_other.ipynb")) == [
        "cell 0: say what this notebook needs from the ones before in a line 'Builds on: ...' (links to the "
        "notebooks, or 'nothing')."]


@pytest.mark.skipif(not REAL_SOLUTIONS, reason=NO_REAL_NOTEBOOKS)
def test_the_real_notebooks_link_each_to_the_next_and_to_those_they_mention():
    for path, following in zip(REAL_SOLUTIONS, REAL_SOLUTIONS[1:]):
        last = read_notebook(path).cells[-1]
        assert last.cell_type == "markdown" and f"]({following.name})" in last.source, path.name
    problems = [problem for path in REAL_SOLUTIONS for problem in validate_solution_notebook(read_notebook(path), path)
                if "link" in problem or "Builds on" in problem]
    assert problems == []


def test_nbgraders_validator_judges_the_metadata_schema():
    """The release asks nbgrader's MetadataValidator, not a copy of its rules: an old schema and a missing key fail."""
    from course_utils.course.release import read_notebook, solution_notebooks, validate_solution_notebook

    path = solution_notebooks()[1]
    nb = read_notebook(path)
    graded = [i for i, cell in enumerate(nb.cells) if cell.metadata.get("nbgrader", {}).get("grade")]
    assert graded and not validate_solution_notebook(nb, path)
    old, missing = copy.deepcopy(nb), copy.deepcopy(nb)
    old.cells[graded[0]].metadata["nbgrader"]["schema_version"] = 2
    del missing.cells[graded[0]].metadata["nbgrader"]["locked"]
    assert any(f"cell {graded[0]}: nbgrader's metadata validator: Outdated schema" in p
               for p in validate_solution_notebook(old, path))
    assert any(f"cell {graded[0]}: nbgrader's metadata validator:" in p and "locked" in p
               for p in validate_solution_notebook(missing, path))
