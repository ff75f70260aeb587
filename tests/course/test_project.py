"""The project's own metadata: dependency lists split by who needs them, environment.yml generated from them, the
supported Python versions, the torch installer, and a package that imports on every supported Python."""

from __future__ import annotations

import ast
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from course_utils.__main__ import main
from course_utils.course import env, project
from course_utils.ground import paths


def test_minimum_versions_come_from_pyproject():
    minimums = project.minimum_versions()
    assert minimums["torch"] == "2.4" and minimums["trl"] == "0.20"
    assert {dist for _, dist in env.COURSE_PACKAGES} <= set(minimums)


def test_a_colab_runtime_installs_the_runtime_stack_only():
    runtime = {r.name.lower() for r in project.requirements()}
    assert {"torch", "transformers", "peft", "trl", "bitsandbytes"} <= runtime
    tools = {"jupyterlab", "papermill", "nbformat", "nbgrader", "pytest", "ruff", "unsloth", "ipykernel"}
    assert not runtime & tools
    assert {"dev", "lab", "gpu"} <= set(project.extras())
    assert {r.name for r in project.requirements("lab")} == {"jupyterlab"}
    assert {"papermill", "nbgrader", "pytest"} <= {r.name for r in project.requirements("dev")}


def test_every_third_party_import_of_the_package_is_declared():
    declared = {r.name.lower().replace("-", "_") for extra in [None, *project.extras()]
                for r in project.requirements(extra)}
    import_names = {"rouge_score": "rouge_score", "huggingface_hub": "huggingface_hub", "IPython": "ipykernel",
                    "llama_cpp": "llama_cpp_python", "yaml": "pyyaml"}
    stdlib = set(sys.stdlib_module_names) | {"course_utils", "__future__"}
    missing = set()
    for path in paths.PACKAGE_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            for name in names:
                top = name.split(".")[0]
                dist = import_names.get(top, top).lower()
                if top not in stdlib and dist not in declared:
                    missing.add(f"{top} ({path.name})")
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"


def test_installed_metadata_says_what_pyproject_says(monkeypatch):
    from_pyproject = {str(r) for r in project.requirements()}
    from_dev = {str(r.name) for r in project.requirements("dev")}
    monkeypatch.setattr(project, "_pyproject", lambda path=None: None)
    assert {str(r) for r in project.requirements()} == from_pyproject, "reinstall: pip install -e '.[dev]'"
    assert {r.name for r in project.requirements("dev")} == from_dev


def test_environment_yml_is_generated_from_pyproject(capsys):
    assert (paths.REPO_ROOT / "environment.yml").read_text(encoding="utf-8") == project.environment_yml(), \
        "environment.yml is out of date: run `python -m course_utils environment-yml`"
    assert main(["environment-yml", "--check"]) == 0
    text = project.environment_yml()
    for requirement in [*project.requirements(), *project.requirements("dev"), *project.requirements("lab")]:
        assert f"      - {requirement}\n" in text
    assert "unsloth" not in text.split("pip:")[1].split("#")[0]


def test_supported_python_is_said_once_and_everywhere_alike():
    assert project.requires_python() == ">=3.11"
    assert env.MIN_PYTHON == (3, 11)
    assert "python=3.11" in project.environment_yml()
    assert "Python 3.11" in (paths.REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert (paths.REPO_ROOT / "LICENSE").read_text().startswith("MIT License")
    assert project.pyproject()["project"]["license-files"] == ["LICENSE"]


# Standard-library modules that Python 3.12 or 3.13 removed (PEP 594, PEP 632 and imp): a module that imports one
# works on 3.11 and fails on Colab's Python.


REMOVED_AFTER_311 = {"distutils", "imp", "asynchat", "asyncore", "smtpd", "aifc", "audioop", "cgi", "cgitb", "chunk",
                     "crypt", "imghdr", "mailcap", "msilib", "nis", "nntplib", "ossaudiodev", "pipes", "sndhdr",
                     "spwd", "sunau", "telnetlib", "uu", "xdrlib", "lib2to3"}


@pytest.mark.parametrize("folder", ["course_utils", "scripts", "tests", "data"])
def test_code_parses_as_python_311_and_uses_no_module_later_pythons_removed(folder):
    for path in (paths.REPO_ROOT / folder).rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 11))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            removed = {n.split(".")[0] for n in names} & REMOVED_AFTER_311
            assert not removed, f"{path}: imports {removed}, which Python 3.12/3.13 no longer have"


# --- set-up -------------------------------------------------------------------------------------------------------


def test_make_setup_stops_on_an_old_python_and_says_which_to_use(tmp_path):
    fake = tmp_path / "python3.9"
    fake.write_text("#!/bin/sh\ncase \"$*\" in *platform*) echo 3.9.6;; *) exit 1;; esac\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    result = subprocess.run(["make", "-s", "setup", f"PYTHON={fake}", f"VENV={tmp_path / 'venv'}"],
                            cwd=paths.REPO_ROOT, capture_output=True, text=True,
                            env={**os.environ, "MAKEFLAGS": ""})
    assert result.returncode != 0
    assert "Python 3.11 or newer" in result.stderr and "3.9.6" in result.stderr
    assert "make PYTHON=python3.12 setup" in result.stderr
    assert not Path(tmp_path / "venv").exists()
