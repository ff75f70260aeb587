"""The package's floors are import-linter contracts (pyproject.toml's [tool.importlinter]); they hold, a forbidden import
breaks them, and docs/architecture.md draws the same layers in the same order."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from course_utils.ground import paths

PYPROJECT = paths.REPO_ROOT / "pyproject.toml"
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the ``course_utils`` found first from ``root`` (with ``root``'s pyproject.toml)."""
    return subprocess.run([sys.executable, "-c", LINT], cwd=root, env={"PYTHONPATH": str(root), "PATH": ""},
                          capture_output=True, text=True, timeout=120)


def contracts() -> dict[str, dict]:
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    return {contract["id"]: contract for contract in config["tool"]["importlinter"]["contracts"]}


def floors() -> list[list[str]]:
    """The layers contract's floors, top first, each a list of its groups."""
    return [re.split(r"\s*[|:]\s*", layer.strip()) for layer in contracts()["floors"]["layers"]]


def test_the_contracts_hold():
    result = lint_imports(paths.REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout, result.stdout


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """A copy of the package's Python files and pyproject.toml, to break on purpose."""
    shutil.copytree(paths.PACKAGE_DIR, tmp_path / "course_utils", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PYPROJECT, tmp_path / "pyproject.toml")
    return tmp_path


def test_the_copy_holds_before_it_is_broken(package_copy):
    assert lint_imports(package_copy).returncode == 0


@pytest.mark.parametrize(("module", "forbidden"), [
    ("models/gpt.py", "from course_utils.course import runner"),  # a teaching module imports the machinery
    ("ground/paths.py", "from course_utils.reporting import tables"),  # the ground imports a floor above it
    ("storage/sharing.py", "from course_utils.serving import export"),  # storage imports what stands on it
    ("training/train.py", "from course_utils.finetuning import lora"),  # independent subjects import each other
])
def test_a_forbidden_import_breaks_the_floors(package_copy, module, forbidden):
    path = package_copy / "course_utils" / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{forbidden}  # noqa\n", encoding="utf-8")
    result = lint_imports(package_copy)
    assert result.returncode == 1, result.stdout
    assert "Floors" in result.stdout.split("Broken contracts")[-1], result.stdout


def test_a_circle_inside_a_group_breaks_the_no_circles_contract(package_copy):
    path = package_copy / "course_utils" / "ground" / "hub.py"  # profiles imports hub: hub importing it closes a loop
    path.write_text(path.read_text(encoding="utf-8") + "\nfrom course_utils.ground import profiles  # noqa\n",
                    encoding="utf-8")
    result = lint_imports(package_copy)
    assert result.returncode == 1, result.stdout
    broken = result.stdout.split("Broken contracts")[-1]
    assert "No circles" in broken and "Floors" not in broken, result.stdout


def test_every_group_of_the_package_is_on_a_floor():
    groups = {p.name for p in paths.PACKAGE_DIR.iterdir() if (p / "__init__.py").exists()}
    on_floors = [group for floor in floors() for group in floor]
    assert sorted(on_floors) == sorted(groups)


def test_the_architecture_page_draws_the_contracts_floors():
    """docs/architecture.md's table of floors lists the contract's layers, top first, group for group."""
    page = (paths.REPO_ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = page.split("| floor | groups |", 1)[1].split("\n\n", 1)[0]
    cells = [re.split(r"(?<!\\)\|", row) for row in table.strip().splitlines()[1:]]  # \| is a pipe in a cell
    drawn = [re.findall(r"`([a-z_]+)`", row[2]) for row in cells]
    assert drawn == floors()
    for floor in floors():  # and the picture has a box for each group
        for group in floor:
            assert re.search(rf"^\s+{group}\[", page, flags=re.M), group
