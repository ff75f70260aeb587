"""course_utils.ground.paths: the workbook's folders, overrides for tests and CI, paths shown without a machine."""

from __future__ import annotations

from course_utils.ground import paths


def test_the_repository_root_is_the_workbook():
    assert (paths.REPO_ROOT / "pyproject.toml").exists() and paths.PACKAGE_DIR.name == "course_utils"
    assert paths.solutions_dir().name == "solutions" and paths.notebooks_dir().name == "notebooks"


def test_data_and_build_folders_can_be_moved(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COURSE_BUILD_DIR", str(tmp_path / "build"))
    assert paths.data_dir() == (tmp_path / "data").resolve()
    work = paths.work_dir("nb00")
    assert work == (tmp_path / "build" / "work" / "nb00").resolve() and work.is_dir()


def test_paths_inside_the_workbook_are_shown_relative():
    assert paths.display_path(paths.REPO_ROOT / "data" / "models") == "data/models"
    assert paths.display_path("/somewhere/else") == "/somewhere/else"
    assert paths.display_path("relative/already") == "relative/already"
