"""Without bubblewrap, `make setup` says so with the install line and the sandbox tests are skipped with the reason;
in CI a missing sandbox fails them (tests/sandbox_required.py). bubblewrap is hidden by leaving it off PATH."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from course_utils.course.sandbox import INSTALL_BUBBLEWRAP
from course_utils.ground import paths

TESTS = """
import pytest

@pytest.mark.sandbox
def test_boxed():
    pass

def test_plain():
    pass
"""


@pytest.fixture
def no_bwrap_on_path(tmp_path, monkeypatch):
    """PATH holds only a folder without bwrap (with make and uname, for the Makefile test)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in ("make", "uname"):
        found = shutil.which(tool)
        if found:
            (folder / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(folder))
    return folder


def test_sandbox_tests_are_skipped_with_the_reason_where_bwrap_is_missing(pytester, no_bwrap_on_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    pytester.makeconftest('pytest_plugins = ["sandbox_required"]')
    pytester.makepyfile(TESTS)
    result = pytester.runpytest_inprocess("-ra", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [f"SKIPPED*needs the grader's sandbox: bubblewrap is not installed ({INSTALL_BUBBLEWRAP})"])


def test_in_ci_a_missing_sandbox_fails_the_sandbox_tests(pytester, no_bwrap_on_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    pytester.makeconftest('pytest_plugins = ["sandbox_required"]')
    pytester.makepyfile(TESTS)
    result = pytester.runpytest_inprocess("-ra", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)  # its setup fails: CI fails
    result.stdout.fnmatch_lines(["*CI needs the grader's sandbox, and there is none: bubblewrap is not installed*"])


@pytest.mark.skipif(not shutil.which("make"), reason="make is not installed")
def test_make_setup_names_the_missing_bubblewrap_and_how_to_install_it(no_bwrap_on_path):
    said = subprocess.run(["make", "-s", "system-check"], cwd=paths.REPO_ROOT, capture_output=True, text=True,
                          env={**os.environ}, timeout=60)
    assert said.returncode == 0  # a note, not a failure: everything but grading works without it
    assert "bubblewrap (bwrap) is not installed" in said.stderr and INSTALL_BUBBLEWRAP in said.stderr
    (no_bwrap_on_path / "bwrap").symlink_to(shutil.which("true", path="/bin:/usr/bin"))
    quiet = subprocess.run(["make", "-s", "system-check"], cwd=paths.REPO_ROOT, capture_output=True, text=True,
                           timeout=60)
    assert quiet.returncode == 0 and quiet.stderr == ""
