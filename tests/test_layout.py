"""The package's layout is the one docs/architecture.md draws: subject groups, every module named there, and each
notebook's helpers listed in its title cell and in the README."""

from __future__ import annotations

from course_utils.course import release
from course_utils.ground import paths

GROUPS = ["storage", "models", "training", "finetuning", "reporting", "course", "checks", "data_build"]


def test_the_package_has_a_dozen_entries_at_its_top():
    top = sorted(p.name for p in paths.PACKAGE_DIR.iterdir() if p.name != "__pycache__")
    assert top == sorted(["__init__.py", "__main__.py", *GROUPS]), top


def test_every_module_is_described_in_the_architecture_page():
    page = (paths.REPO_ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for group in GROUPS:
        assert f"## {group}" in page or f"`{group}`" in page or group in page, group
        for module in (paths.PACKAGE_DIR / group).glob("*.py"):
            if module.stem != "__init__":
                assert f"`{module.stem}`" in page or f"{group}.{module.stem}" in page, f"{group}.{module.stem}"


def test_tests_mirror_the_package():
    for group in GROUPS[:6]:
        for module in (paths.PACKAGE_DIR / group).glob("*.py"):
            if module.stem.startswith("_") or module.stem in {"__init__"}:
                continue
            assert (paths.REPO_ROOT / "tests" / group / f"test_{module.stem}.py").exists(), \
                f"no tests/{group}/test_{module.stem}.py"


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
