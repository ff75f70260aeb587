"""The package's layout is the one docs/architecture.md draws: subject groups, every module named in its group's
section, tests that mirror the package, and each notebook's helpers listed in its title cell and in the README."""

from __future__ import annotations

import re
import tomllib

from course_utils.course import release
from course_utils.ground import paths


def floor_groups() -> list[str]:
    """The groups on the floors of the import contract (pyproject.toml), top first."""
    config = tomllib.loads((paths.REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (floors,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "floors"]
    return [group for layer in floors["layers"] for group in re.split(r"\s*[|:]\s*", layer.strip())]


GROUPS = floor_groups()
# Groups whose tests are named after something else than one module: checks (tests/checks/test_checks_nbNN.py, one per
# notebook) and data_build (tests/data_build/test_data_build.py rebuilds data/ whole).
MIRRORED = [group for group in GROUPS if group not in {"checks", "data_build"}]


def section(page: str, group: str) -> str:
    """The text of the architecture page's section whose heading names ``group`` (up to the next heading)."""
    match = re.search(rf"^## [^\n]*\b{group}\b[^\n]*\n(.*?)(?=^## |\Z)", page, flags=re.M | re.S)
    assert match, f"docs/architecture.md has no section headed with {group}"
    return match.group(1)


def test_the_package_has_thirteen_entries_at_its_top():
    top = sorted(p.name for p in paths.PACKAGE_DIR.iterdir() if p.name != "__pycache__")
    assert top == sorted(["__init__.py", "__main__.py", *GROUPS]), top
    assert len(top) == 13  # eleven groups (evaluation the latest), __init__ and __main__


def test_every_module_is_described_in_its_groups_section():
    page = (paths.REPO_ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for group in GROUPS:
        text = section(page, group)
        for module in (paths.PACKAGE_DIR / group).glob("*.py"):
            if module.stem == "__init__":
                continue
            stem = re.escape(module.stem)
            in_table = re.search(rf"^\| [^|\n]*`{stem}`[^|\n]*\|", text, flags=re.M)  # first cell of a row
            in_prose = re.search(rf"`{group}\.{stem}`|\(`{stem}`\)", text)
            assert in_table or in_prose, f"{group}.{module.stem} is not described under its group's heading"


def test_a_module_named_elsewhere_on_the_page_does_not_count():
    page = "## storage: formats\n\n| module | what |\n| --- | --- |\n| `gguf_io` | GGUF |\n\n## models\n\n`gpt` is nice."
    assert re.search(r"^\| [^|\n]*`gguf_io`[^|\n]*\|", section(page, "storage"), flags=re.M)
    assert not re.search(r"^\| [^|\n]*`gpt`[^|\n]*\|", section(page, "models"), flags=re.M)
    assert "gguf_io" not in section(page, "models")


def test_tests_mirror_the_package():
    for group in MIRRORED:
        for module in (paths.PACKAGE_DIR / group).glob("*.py"):
            if module.stem.startswith("_"):
                continue
            assert (paths.REPO_ROOT / "tests" / group / f"test_{module.stem}.py").exists(), \
                f"no tests/{group}/test_{module.stem}.py"
    for number in (p.stem.removeprefix("nb") for p in (paths.PACKAGE_DIR / "checks").glob("nb*.py")):
        assert (paths.REPO_ROOT / "tests" / "checks" / f"test_checks_nb{number}.py").exists(), number


def test_title_cells_and_readme_name_the_helpers_each_notebook_imports():
    readme = (paths.REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for path in release.solution_notebooks():
        nb = release.read_notebook(path)
        line = release.modules_line(nb)
        assert release.imported_modules(nb), path.name
        assert line in nb.cells[0].source.split("\n"), f"{path.name}: run the release's fix for the title cell"
        assert f"| {path.name[:2]} | {line.removeprefix(release.MODULES_PREFIX)} |" in readme, path.name


def test_a_stale_helper_list_is_refused(tmp_path):
    nb = release.read_notebook(release.solution_notebooks()[0])
    nb.cells[0].source = nb.cells[0].source.replace("`models.memory`, ", "")
    assert any("list the helpers" in p for p in release.validate_solution_notebook(nb, release.solution_notebooks()[0]))
