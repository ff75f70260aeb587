"""scripts/gpu_check.py on the CPU: wheels from several folders into one target, sections that each write their
results, the time budget, the T4-shaped verdict, and the notebooks' papermill parameters."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def gpu_check(load_script):
    return load_script("gpu_check")


@pytest.fixture(scope="module")
def make_wheel(load_script):
    """A minimal pure-Python wheel of a package (version 1.0), with a valid RECORD."""
    return load_script("gpu_wheel_plan").example_wheel


def test_wheels_from_several_folders_go_into_one_target(gpu_check, make_wheel, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    make_wheel(tmp_path / "wheels" / "batch-01", "standin_alpha")
    make_wheel(tmp_path / "wheels" / "batch-02", "standin_beta")
    status = gpu_check.install_wheels([tmp_path / "wheels"], tmp_path / "site")  # the folder of batch-NN folders
    assert status["status"] == "installed" and status["wheels"] == 2
    assert {p.name for p in (tmp_path / "site").iterdir()} >= {"standin_alpha", "standin_beta"}
    assert sys.path[0] == str(tmp_path / "site")
    done = subprocess.run([sys.executable, "-c", "import standin_alpha, standin_beta; print(standin_beta.VALUE)"],
                          capture_output=True, text=True)  # PYTHONPATH now names the target for child processes
    assert done.stdout.strip() == "1", done.stderr


def test_a_broken_unsloth_wheel_is_left_out_and_the_reason_recorded(gpu_check, make_wheel, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    make_wheel(tmp_path / "w", "standin_gamma")
    (tmp_path / "w" / "unsloth-1.0-py3-none-any.whl").write_bytes(b"not a zip file")
    status = gpu_check.install_wheels([tmp_path / "w"], tmp_path / "site")
    assert status["status"] == "installed without Unsloth" and status["unsloth"].startswith("not installed: ")
    assert (tmp_path / "site" / "standin_gamma").is_dir()
    assert gpu_check.install_wheels([tmp_path / "empty"], tmp_path / "site")["wheels"] == 0


def test_the_smoke_ladder_has_every_row_and_the_lectures_table(gpu_check):
    from course_utils.training import speed

    ladder = gpu_check.ladder("smoke", "cpu", gpu_check.Budget(None))
    assert [row["name"] for row in ladder["rows"]] == [name for name, _, _ in speed.RUNGS]
    tf32 = next(row for row in ladder["rows"] if row["name"] == "+ TF32 matmuls")
    assert tf32["tokens_per_second"] is None and tf32["note"].startswith("not run:")
    assert ladder["rows"][0]["tokens_per_second"] > 0 and len(ladder["lecture"]) == len(speed.LECTURE_LADDER)


def test_each_section_is_written_as_it_ends_and_a_failure_keeps_the_others(gpu_check, tmp_path):
    path = tmp_path / "results.json"
    seen = []

    def ladder():
        return {"status": "done", "rows": ["ladder row"]}

    def finetune():
        seen.append(json.loads(path.read_text()))  # the ladder is already in the file while this one runs
        raise RuntimeError("CUDA out of memory")

    results = {"mode": "gpu"}
    gpu_check.run_sections({"ladder": ladder, "finetune": finetune, "notebooks": lambda: {"status": "done"}},
                           results, path, verbose=False)
    assert seen[0]["ladder"]["rows"] == ["ladder row"] and seen[0]["finetune"]["status"] == "running"
    saved = json.loads(path.read_text())
    assert saved["finetune"]["status"] == "failed: RuntimeError: CUDA out of memory"
    assert saved["notebooks"]["status"] == "done" and gpu_check.failed_parts(saved) == ["finetune"]


def test_an_interrupted_section_keeps_what_came_before_and_stops(gpu_check, tmp_path):
    path = tmp_path / "results.json"

    def finetune():
        raise KeyboardInterrupt  # what SIGTERM from the command's time limit becomes (_stop_on_sigterm)

    with pytest.raises(KeyboardInterrupt):
        gpu_check.run_sections({"ladder": lambda: {"status": "done", "rows": [1]}, "finetune": finetune,
                                "notebooks": lambda: pytest.fail("ran after an interruption")}, {}, path,
                               verbose=False)
    saved = json.loads(path.read_text())
    assert saved["ladder"]["rows"] == [1] and saved["finetune"]["status"].startswith("interrupted")
    assert "notebooks" not in saved


def test_the_smoke_checks_pass(gpu_check):
    assert gpu_check.check_partial_write().startswith("checked")
    assert gpu_check.check_wheel_plan().startswith("checked")


def test_a_spent_budget_starts_no_worker(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check.subprocess, "run", lambda *a, **k: pytest.fail("a worker was started"))
    budget = gpu_check.Budget(0.0)
    row = gpu_check.run_worker({"run": "LoRA, unquantized base"}, tmp_path, budget)
    assert row == {"run": "LoRA, unquantized base", "status": budget.why}
    assert budget.why == "not run: the time budget (0 s, --budget-s) was spent"
    assert gpu_check.ladder("smoke", "cpu", budget) == {"status": budget.why}
    assert gpu_check.Budget(None).left() is None and not gpu_check.Budget(None).spent()


def test_the_t4_verdict_is_read_from_the_rows(gpu_check):
    cap = gpu_check.T4_MEMORY / 2**20
    under = [{"run": "T4-shaped LoRA", "status": "measured", "peak MiB": cap * 0.5},
             {"run": "T4-shaped QLoRA", "status": "measured", "peak MiB": cap * 0.25}]
    assert gpu_check.t4_verdict(under, "cuda").startswith("Fits a free T4: yes, measured: ")
    assert "7.5 GiB under a cap of 15 GiB" in gpu_check.t4_verdict(under, "cuda")
    failed = [under[0], {"run": "T4-shaped QLoRA", "status": "failed: OutOfMemoryError"}]
    assert gpu_check.t4_verdict(failed, "cuda") == (
        "Fits a free T4: not shown (T4-shaped QLoRA: failed: OutOfMemoryError).")
    assert gpu_check.t4_verdict(under, "cpu") == "Fits a free T4: not run: no CUDA GPU."
    assert gpu_check.t4_shape("cpu").startswith("T4 shape not applied")


def test_the_notebook_parameters_exist_and_keep_the_run_short(gpu_check):
    from course_utils.course.release import solution_notebooks

    for nb in solution_notebooks():
        wanted = gpu_check.NOTEBOOK_PARAMETERS.get(nb.name[:2])
        if wanted:
            assert set(wanted) <= gpu_check.notebook_parameters(nb), nb.name
    assert gpu_check.NOTEBOOK_PARAMETERS["06"]["UNSLOTH_GGUF"] is False  # no network there to build llama.cpp
    assert gpu_check.NOTEBOOK_PARAMETERS["06"]["COMPARE_BACKENDS"] is False


def test_only_runs_the_sections_asked_for(gpu_check, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(gpu_check, "ladder", lambda mode, device, budget: calls.append("ladder") or {"status": "x"})
    results = tmp_path / "results.json"
    assert gpu_check.main(["--smoke", "--only", "ladder", "--results", str(results)]) == 0
    saved = json.loads(results.read_text())
    assert calls == ["ladder"] and saved["sections"] == ["ladder"] and "finetune" not in saved
