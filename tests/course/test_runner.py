"""The papermill runner: failures are located and summarised, other notebooks still run, figures are collected."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from nb_builders import EXAMPLE_SOLUTION, code, example_solution, markdown, notebook

from course_utils.__main__ import main
from course_utils.course.release import make_student_notebook, read_notebook, validate_solution_notebook
from course_utils.course.runner import FailedCell, RunResult, copy_outputs, run_notebooks, summary_markdown
from course_utils.reporting.key_figures import FIGURES_ENV


def _write(nb, path: Path) -> Path:
    nbformat.write(nb, path)
    return path


def _ok_notebook(folder: Path) -> Path:
    return _write(
        notebook(
            [
                markdown("# 01 · Fine"),
                code('PROFILE = "auto"', tags=("parameters",)),
                code("import os\nfrom course_utils.reporting.key_figures import record"),
                code(
                    'print(PROFILE, os.environ.get("HF_HUB_OFFLINE"))\nrecord("answer", 42, "things")\n'
                    'record("loss", 1.234567, "nats")'
                ),
            ]
        ),
        folder / "01_fine.ipynb",
    )


def _failing_notebook(folder: Path) -> Path:
    return _write(
        notebook(
            [
                markdown("# 02 · Broken"),
                code('PROFILE = "auto"', tags=("parameters",)),
                code('from course_utils.reporting.key_figures import record\nrecord("before", 1)'),
                code('value = 2\nraise ValueError("boom: the model is too big")'),
                code('print("never runs")'),
            ]
        ),
        folder / "02_broken.ipynb",
    )


@pytest.mark.slow
def test_run_reports_the_failing_cell_and_still_runs_the_others(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(FIGURES_ENV, raising=False)
    failing, ok = _failing_notebook(tmp_path), _ok_notebook(tmp_path)
    build = tmp_path / "build"
    (build / "figures").mkdir(parents=True)
    (build / "figures" / "01_fine.json").write_text('{"stale": {"value": 1, "unit": ""}}')  # an earlier run's
    broken, fine = run_notebooks([failing, ok], build_dir=build, cell_timeout=60)
    assert FIGURES_ENV not in os.environ  # the runner's settings were for the kernels only

    assert (broken.status, fine.status) == ("failed", "ok")
    assert broken.failed_cell == FailedCell(3, "value = 2")
    assert broken.error == "ValueError: boom: the model is too big"
    assert broken.figures == {"before": {"value": 1, "unit": ""}}
    assert fine.figures == {
        "answer": {"value": 42, "unit": "things"},
        "loss": {"value": 1.234567, "unit": "nats"},
    }
    assert fine.seconds > 0

    executed = read_notebook(build / "executed" / "01_fine.ipynb")
    # the profile parameter and the offline switch reached the kernel
    assert executed.cells[-1].outputs[0]["text"] == "tiny 1\n"

    summary = json.loads((build / "summary.json").read_text())
    assert [r["status"] for r in summary["results"]] == ["failed", "ok"]
    assert summary["results"][0]["failed_cell"] == {"index": 3, "first_line": "value = 2"}
    assert {"cpus", "torch", "device"} <= set(summary["machine"])
    markdown_text = (build / "summary.md").read_text()
    assert "| 02_broken.ipynb | failed |" in markdown_text
    assert "answer = 42 things; loss = 1.235 nats" in markdown_text
    assert "### 02_broken.ipynb, cell 3: `value = 2`" in markdown_text
    assert "ValueError: boom: the model is too big" in markdown_text
    assert "| notebook | status | seconds | key figures |" in capsys.readouterr().out


@pytest.mark.slow
def test_a_cell_that_runs_too_long_is_reported(tmp_path):
    nb = _write(
        notebook(
            [
                code('PROFILE = "auto"', tags=("parameters",)),
                code("import time"),
                code("time.sleep(60)"),
            ]
        ),
        tmp_path / "03_slow.ipynb",
    )
    (result,) = run_notebooks([nb], build_dir=tmp_path / "build", cell_timeout=2, verbose=False)
    assert result.status == "failed"
    assert result.failed_cell == FailedCell(2, "time.sleep(60)")
    assert result.error == "CellTimeoutError: a cell ran longer than 2 s"
    assert result.seconds < 40


@pytest.mark.slow
def test_cli_run_exits_1_when_a_notebook_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_BUILD_DIR", str(tmp_path / "build"))
    assert main(["run", str(_failing_notebook(tmp_path)), "--cell-timeout", "60"]) == 1
    assert (tmp_path / "build" / "summary.md").exists()


@pytest.mark.slow
def test_update_solutions_stores_the_outputs_of_a_tiny_run(tmp_path):
    solution = _write(example_solution(), tmp_path / "01_example.ipynb")  # no outputs yet
    assert all(cell.get("outputs", []) == [] for cell in read_notebook(solution).cells)
    (result,) = run_notebooks([solution], build_dir=tmp_path / "build", update_solutions=True, verbose=False)
    assert result.ok, result.error
    assert result.figures == {"words": {"value": 5, "unit": "words"}}

    nb = read_notebook(solution)
    assert [cell.id for cell in nb.cells] == [cell.id for cell in read_notebook(EXAMPLE_SOLUTION).cells]
    assert "papermill" not in nb.metadata and not any("papermill" in cell.metadata for cell in nb.cells)
    counts = [cell.execution_count for cell in nb.cells if cell.cell_type == "code"]
    assert counts == [1, 2, 3, 4, 5, 6]
    assert nb.cells[-1].outputs[0]["text"] == "5\n"
    assert nb.cells[6].outputs[0]["text"].startswith("\u2713 word_count counts words")
    assert validate_solution_notebook(nb, solution) == []
    assert all(cell.get("outputs", []) == [] for cell in make_student_notebook(nb).cells)


# --- fast: copying outputs and the summary, without a kernel -----------------------------------------------------


def test_copy_outputs_matches_cells_by_id_and_drops_the_injected_cell(tmp_path):
    solution = notebook(
        [code('PROFILE = "auto"', tags=("parameters",)), code("print(1)"), markdown("text"), code("2 + 2")]
    )
    solution_path = _write(solution, tmp_path / "01_s.ipynb")
    executed = read_notebook(solution_path)
    injected = code('PROFILE = "tiny"', tags=("injected-parameters",))
    executed.cells.insert(1, injected)
    executed.metadata["papermill"] = {"duration": 1}
    for count, cell in enumerate(executed.cells[:2], start=1):
        cell.execution_count = count
    executed.cells[2].execution_count = 3
    executed.cells[2].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    executed.cells[2].metadata["papermill"] = {"status": "completed"}
    executed.cells[4].execution_count = 4
    executed.cells[4].outputs = [
        nbformat.v4.new_output("execute_result", {"text/plain": "4"}, execution_count=4)
    ]
    executed_path = _write(executed, tmp_path / "executed.ipynb")

    assert copy_outputs(executed_path, solution_path) == 3
    nb = read_notebook(solution_path)
    assert len(nb.cells) == 4 and "papermill" not in nb.metadata
    assert [cell.get("execution_count") for cell in nb.cells] == [1, 2, None, 3]
    assert nb.cells[1].outputs[0]["text"] == "1\n" and "papermill" not in nb.cells[1].metadata
    assert nb.cells[3].outputs[0]["execution_count"] == 3


def test_copy_outputs_refuses_notebooks_without_matching_ids(tmp_path):
    solution_path = _write(notebook([code("print(1)")]), tmp_path / "01_s.ipynb")
    other = notebook([code("print(1)")])
    other.cells[0]["id"] = "something-else"
    with pytest.raises(ValueError, match="cell id"):
        copy_outputs(_write(other, tmp_path / "executed.ipynb"), solution_path)


def test_summary_markdown_table_and_failures():
    results = [
        RunResult(
            Path("01_a.ipynb"),
            "ok",
            1.26,
            figures={"params": {"value": 1234, "unit": ""}, "ratio": {"value": 0.123456, "unit": "x|y"}},
        ),
        RunResult(
            Path("02_b.ipynb"), "failed", 3.0, FailedCell(7, "train(model)"), "RuntimeError: out of memory"
        ),
        RunResult(Path("03_c.ipynb"), "failed", 0.5, None, "NoSuchKernel: python3"),
    ]
    text = summary_markdown(results, {"cpus": 2, "python": "3.11", "torch": "2.13", "device": "cpu"}, "tiny")
    assert "2 CPUs" in text and "torch 2.13" in text and "device cpu" in text
    assert "Result: 1 of 3 notebooks ran" in text
    assert "| 01_a.ipynb | ok | 1.3 | params = 1234; ratio = 0.1235 x\\|y |" in text
    assert "### 02_b.ipynb, cell 7: `train(model)`\n\n```\nRuntimeError: out of memory\n```" in text
    assert "### 03_c.ipynb, before any cell ran" in text



@pytest.mark.slow
def test_a_run_reports_the_claims_its_figures_contradict(tmp_path):
    path = _ok_notebook(tmp_path)
    nb = read_notebook(path)
    nb.cells.append(nbformat.v4.new_markdown_cell("The answer is above a hundred, and the loss below two."))
    nb.cells[-1].metadata["claims"] = [{"sentence": "The answer is above a hundred", "holds": "answer > 100"},
                                       {"sentence": "the loss below two", "holds": "loss < 2"}]
    _write(nb, path)
    (result,) = run_notebooks([path], build_dir=tmp_path / "build", verbose=False)
    assert result.ok and len(result.failed_claims) == 1
    assert "cell 4" in result.failed_claims[0] and "answer = 42" in result.failed_claims[0]
    summary = (tmp_path / "build" / "summary.md").read_text()
    assert "Markdown claims this run's figures contradict: 1." in summary and "The answer is above a hundred" in summary
    assert json.loads((tmp_path / "build" / "summary.json").read_text())["results"][0]["failed_claims"]
