"""The colab rehearsal: every notebook gets DEVICE="cpu" and step counts its parameters cell really has."""

from __future__ import annotations

import nbformat
import pytest

from course_utils.course import colab_rehearsal
from course_utils.course.release import solution_notebooks

NOTEBOOKS = solution_notebooks()


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_every_rehearsal_parameter_exists_in_the_notebook(notebook):
    parameters = colab_rehearsal.rehearsal_parameters(notebook)
    assert parameters["PROFILE"] == "colab" and parameters["DEVICE"] == "cpu"
    assert colab_rehearsal.notebook_key(notebook) in colab_rehearsal.REHEARSAL_PARAMETERS


def test_a_stale_parameter_name_is_caught_before_anything_runs(tmp_path, monkeypatch):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell('PROFILE = "auto"\nDEVICE = None\nSTEPS = None  # a comment\n')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "09_demo.ipynb"
    nbformat.write(nb, path)
    assert colab_rehearsal.parameter_names(path) == {"PROFILE", "DEVICE", "STEPS"}
    monkeypatch.setitem(colab_rehearsal.REHEARSAL_PARAMETERS, "09", {"TRAIN_STEPS": 1})
    with pytest.raises(KeyError, match="09_demo.ipynb's parameters cell has no TRAIN_STEPS"):
        colab_rehearsal.rehearsal_parameters(path)
    with pytest.raises(KeyError, match="TRAIN_STEPS"):
        colab_rehearsal.rehearse([path], out_dir=tmp_path / "out", verbose=False)  # before building anything


# --- the environments on Colab's versions --------------------------------------------------------------------


def test_the_cpu_environment_holds_colabs_versions_with_the_setup_cells_on_top():
    from course_utils.course import colab_runtime

    runtime = colab_runtime.load()
    cpu, gpu = colab_rehearsal.VENVS
    pins = colab_rehearsal.venv_constraints(cpu)
    assert pins["ipython"] == runtime.packages["ipython"] and pins["ipywidgets"] == runtime.packages["ipywidgets"]
    assert pins["numpy"] == runtime.packages["numpy"] and pins["transformers"] == runtime.packages["transformers"]
    tested = (colab_rehearsal.paths.REPO_ROOT / "constraints" / "colab.txt").read_text()
    assert f"datasets=={pins['datasets']}" in tested  # what the setup cell installs on top wins
    assert not {"torch", "torchvision", "triton", "setuptools"} & set(pins)  # CPU torch stands in
    assert cpu.notebooks == ("00", "01", "02", "03", "04", "05", "06", "07", "08") and gpu.notebooks == ()
    assert "GPU" in gpu.cannot_run_here  # built and probed, its notebooks run in make gpu-check


def test_a_colab_version_this_python_cannot_install_is_left_to_pip(monkeypatch):
    cpu, _ = colab_rehearsal.VENVS
    tested = (colab_rehearsal.paths.REPO_ROOT / "constraints" / "colab.txt").read_text()
    monkeypatch.setattr(colab_rehearsal, "PYTHON", (3, 13))
    assert f"scipy=={colab_rehearsal.venv_constraints(cpu)['scipy']}" in tested  # Colab's Python: Colab's pin
    monkeypatch.setattr(colab_rehearsal, "PYTHON", (3, 11))
    assert "scipy" not in colab_rehearsal.venv_constraints(cpu)  # its scipy needs 3.12: pip picks one for 3.11


def test_the_gpu_environment_has_the_gpu_resolution_without_unsloth():
    cpu, gpu = colab_rehearsal.VENVS
    pins = colab_rehearsal.venv_constraints(gpu)
    assert "unsloth" not in pins and "unsloth-zoo" not in pins
    gpu_file = (colab_rehearsal.paths.REPO_ROOT / "constraints" / "colab-gpu.txt").read_text()
    for name in ("transformers", "trl", "datasets"):
        assert f"{name}=={pins[name]}" in gpu_file
    requirements = colab_rehearsal.venv_requirements(gpu)
    assert requirements[0] == colab_rehearsal.CPU_TORCH and "papermill" in requirements
    assert not any(r.startswith("unsloth") for r in requirements) and any(r.startswith("trl") for r in requirements)


def test_build_venv_runs_one_install_and_registers_its_kernel(tmp_path, monkeypatch):
    commands = []
    monkeypatch.setattr(colab_rehearsal.subprocess, "run", lambda cmd, **kw: commands.append(cmd))
    monkeypatch.setattr("course_utils.course.install_torch.index_reachable", lambda: False)
    where = colab_rehearsal.build_venv(colab_rehearsal.VENVS[0], tmp_path / "venv", verbose=False)
    venv_cmd, pip_cmd, kernel_cmd = commands
    assert venv_cmd[1:3] == ["-m", "venv"]
    assert pip_cmd[1:4] == ["-m", "pip", "install"] and pip_cmd[pip_cmd.index("-c") + 1].endswith("constraints.txt")
    assert "ipython==7.34.0" in (where / "constraints.txt").read_text().split()
    assert kernel_cmd[-4:] == ["--prefix", str(where), "--name", colab_rehearsal.KERNEL_NAME]
    commands.clear()  # unchanged constraints: nothing to do the second time
    colab_rehearsal.build_venv(colab_rehearsal.VENVS[0], tmp_path / "venv", verbose=False)
    assert commands == []


def test_the_probe_of_an_environment_fails_on_versions_other_than_its_constraints(tmp_path):
    # This venv holds CI's pins (TRL 1.16), not the [gpu] environment's (TRL 1.15): the probe must say so.
    import sys

    (tmp_path / "bin").mkdir()
    wrapper = tmp_path / "bin" / "python"  # a script, not a link: a link outside the venv would leave the venv
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    cpu, gpu = colab_rehearsal.VENVS
    with pytest.raises(RuntimeError, match="installed versions differ from the constraints"):
        colab_rehearsal.probe_venv(gpu, tmp_path)
