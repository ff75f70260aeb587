"""The command line: python -m course_utils {release,run,report,data,hub-standins,rehearse}."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nb_builders import EXAMPLE_SOLUTION

from course_utils.__main__ import main
from course_utils.ground import paths


def _python(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(paths.REPO_ROOT)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=60)


def test_help_lists_the_commands_without_heavy_imports():
    shown = _python("-m", "course_utils", "--help")
    assert shown.returncode == 0
    for command in ("release", "run", "report", "data"):
        assert command in shown.stdout
    probe = _python(
        "-c",
        "import sys, course_utils.__main__ as cli; cli.build_parser(); "
        "print(sorted(m for m in ('torch', 'papermill', 'nbformat', 'course_utils.course.runner') "
        "if m in sys.modules))",
    )
    assert probe.stdout.strip() == "[]", probe.stderr


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A repository with the example solution; paths.solutions_dir/notebooks_dir point into it."""
    solutions, notebooks = tmp_path / "solutions", tmp_path / "notebooks"
    solutions.mkdir()
    shutil.copy(EXAMPLE_SOLUTION, solutions / "01_example.ipynb")
    monkeypatch.setattr(paths, "solutions_dir", lambda: solutions)
    monkeypatch.setattr(paths, "notebooks_dir", lambda: notebooks)
    return solutions, notebooks


def test_release_check_then_release(repo, capsys):
    solutions, notebooks = repo
    assert main(["release", "--check"]) == 1
    assert "out of sync" in capsys.readouterr().err
    assert main(["release"]) == 0
    assert (notebooks / "01_example.ipynb").exists()
    assert main(["release", "--check"]) == 0
    assert "in sync" in capsys.readouterr().out


def test_release_refuses_a_broken_solution(repo, capsys):
    solutions, notebooks = repo
    nb = nbformat.read(solutions / "01_example.ipynb", as_version=4)
    nb.cells[2].metadata["tags"] = []
    nbformat.write(nb, solutions / "01_example.ipynb")
    assert main(["release"]) == 1
    assert "01_example.ipynb: cell 2: must be a code cell tagged 'parameters'" in capsys.readouterr().err
    assert not notebooks.exists()


def test_run_only_with_no_match_is_a_usage_error(repo, capsys):
    assert main(["run", "--only", "05"]) == 2
    assert "no notebook to run" in capsys.readouterr().err


def test_run_rejects_a_malformed_parameter(repo, capsys):
    assert main(["run", "--param", "not a pair"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err


def test_run_passes_typed_parameters_and_the_selection(repo, monkeypatch):
    seen = {}

    def fake_run(notebooks, **kwargs):
        seen.update(notebooks=[nb.name for nb in notebooks], **kwargs)
        return []

    monkeypatch.setattr("course_utils.course.runner.run_notebooks", fake_run)
    assert (
        main(["run", "--only", "01", "-p", "STEPS=20", "-p", "MODEL=tiny-gpt", "--cell-timeout", "30"]) == 0
    )
    assert seen["notebooks"] == ["01_example.ipynb"]
    assert seen["parameters"] == {"STEPS": 20, "MODEL": "tiny-gpt"}
    assert seen["profile"] == "tiny" and seen["cell_timeout"] == 30 and seen["update_solutions"] is False


@pytest.mark.parametrize("status", ["OK", "WARN", "FAIL"])
def test_report_exit_status_follows_the_report(status, monkeypatch, capsys):
    from course_utils.course.env import Requirement

    def fake_report(print_report=True):
        report = [Requirement("python", "OK", "3.11"), Requirement("torch", status, "2.13", fix="pip install torch")]
        if print_report:
            print("\n".join(str(r) for r in report))
        return report

    monkeypatch.setattr("course_utils.course.env.environment_report", fake_report)
    assert main(["report"]) == (1 if status == "FAIL" else 0)
    assert f"[{status}]" in capsys.readouterr().out


def test_data_command_rebuilds_through_build_all(monkeypatch):
    calls = []
    monkeypatch.setattr("course_utils.data_build.build_all", lambda: calls.append("built"))
    assert main(["data"]) == 0
    assert calls == ["built"]


def test_hub_standins_passes_the_selection_and_names_an_unknown_id(monkeypatch, tmp_path, capsys):
    seen = {}
    monkeypatch.setattr("course_utils.course.hub_standins.build_standins", lambda home, **kw: seen.update(home=home, **kw))
    assert main(["hub-standins", str(tmp_path), "--model", "openai-community/gpt2", "--dataset", "x/y"]) == 0
    assert seen == {"home": tmp_path, "models": ["openai-community/gpt2"], "datasets": ["x/y"]}
    assert f"HF_HOME={tmp_path} HF_HUB_OFFLINE=1" in capsys.readouterr().out
    monkeypatch.undo()
    assert main(["hub-standins", str(tmp_path), "--model", "org/unknown"]) == 2  # the real builder refuses it
    assert "No stand-in is defined for org/unknown" in capsys.readouterr().err


def test_rehearse_runs_the_selection_and_fails_with_a_failing_notebook(repo, monkeypatch):
    from course_utils.course.runner import RunResult

    seen = {}

    def fake_rehearse(notebooks, **kwargs):
        seen.update(notebooks=[nb.name for nb in notebooks], **kwargs)
        return [RunResult(nb, "failed", 1.0) for nb in notebooks]

    monkeypatch.setattr("course_utils.course.colab_rehearsal.rehearse", fake_rehearse)
    monkeypatch.setattr("course_utils.course.colab_rehearsal.build_venv", lambda venv, **kw: Path("/venv"))
    monkeypatch.setattr("course_utils.course.colab_rehearsal.versions_line", lambda where: "Python 3.11.7")
    assert main(["rehearse", "--only", "01", "--cell-timeout", "60"]) == 1
    note = seen.pop("profile_note")
    assert "Colab runs Python 3.13" in note and "this machine" in note  # where the results are shown
    assert seen == {"notebooks": ["01_example.ipynb"], "hf_home": None, "cell_timeout": 60, "verbose": True,
                    "venv": Path("/venv"), "out_dir": paths.build_dir() / "colab" / "colab-venv"}
    assert main(["rehearse", "--only", "07"]) == 2
