"""The ``sandbox`` marker: a test that needs the grader's bubblewrap sandbox.

Where bubblewrap is missing (or cannot make a box), such a test is skipped with the reason, so that `make test`
passes on a developer's machine and says what it left out. In CI (``CI`` set, as GitHub Actions and ``.ci/run``
set it) a missing sandbox fails the test instead: grading refuses to run without one, so CI must prove it works.
``tests/conftest.py`` loads this module; ``tests/test_sandbox_required.py`` tests it with bubblewrap hidden.
"""

from __future__ import annotations

import os

import pytest

MISSING = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sandbox: needs the grader's bubblewrap sandbox (skipped where it is missing, "
                                       "except in CI)")


def missing_sandbox(config: pytest.Config) -> str:
    """Why no sandbox can be made here ("" when one can); asked once per pytest process."""
    if MISSING not in config.stash:
        from course_utils.course.sandbox import find_sandbox

        box = find_sandbox()
        config.stash[MISSING] = "" if box.confined else box.reason
    return config.stash[MISSING]


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures are made: some grade submissions in a sandbox
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("sandbox") is None:
        return
    reason = missing_sandbox(item.config)
    if not reason:
        return
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"CI needs the grader's sandbox, and there is none: {reason}", pytrace=False)
    pytest.skip(f"needs the grader's sandbox: {reason}")
