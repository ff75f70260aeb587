"""The GitHub workflow and the pre-commit hooks run what CI runs: `.ci/run`, and the same ruff, release and
environment.yml checks as `make test`."""

from __future__ import annotations

import re

import yaml

from course_utils.ground import paths

ROOT = paths.REPO_ROOT
PYTHON = ".venv/bin/python"


def _recipe(target: str) -> list[str]:
    """The command lines of a Makefile target, ``$(PY)`` spelled as the venv's python."""
    lines = (ROOT / "Makefile").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip().replace("$(PY)", PYTHON))
    return recipe


def _ci_run_commands() -> list[str]:
    return [line.split("#")[0].strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]


def test_ci_runs_make_test_as_the_readme_says():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(r"^make test\b", readme, re.M), "README.md no longer shows `make test`"
    assert "make test" in _ci_run_commands()
    assert "export CI=true HF_HUB_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1" in _ci_run_commands()  # sandbox required


def test_make_test_runs_the_notebooks_under_nbval_beside_the_tests():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert _recipe("test") == ["$(PYTEST_ALL)"]
    nbval = re.search(r"^NBVAL := (.*)$", makefile, re.M).group(1).split()
    assert {"--nbval-lax", "--nbval-current-env", "--nbval-sanitize-with=tests/nbval_sanitize.cfg"} <= set(nbval)
    pytest_all = re.search(r"^PYTEST_ALL = (.*)$", makefile, re.M).group(1)
    assert "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1" in pytest_all and "--dist loadscope" in pytest_all
    assert pytest_all.endswith("$(NBVAL) solutions tests")


def test_the_github_workflow_runs_ci_run_on_python_3_11_with_the_system_packages():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8"))
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert {"push", "pull_request"} <= set(triggers)
    (job,) = workflow["jobs"].values()
    assert job["runs-on"].startswith("ubuntu")
    steps = job["steps"]
    python = next(step for step in steps if step.get("uses", "").startswith("actions/setup-python"))
    assert python["with"]["python-version"] == "3.11"
    runs = [step["run"].strip() for step in steps if "run" in step]
    install = next(run for run in runs if "apt-get install" in run)
    assert {"bubblewrap", "cmake", "g++"} <= set(install.split())
    assert runs[-1] == ".ci/run"
    assert any(step.get("uses", "").startswith("actions/checkout") for step in steps[:1])


def test_pre_commit_runs_the_checks_make_test_runs():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    hooks = {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}
    assert set(hooks) == {"ruff", "release-check", "environment-yml"}
    assert all(hook["language"] == "system" for hook in hooks.values())  # the venv's pinned tools
    assert _recipe("lint") == [hooks["ruff"]["entry"] + " ."]
    tests_text = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "tests").rglob("test_*.py"))
    for hook, argv in (("release-check", ["release", "--check"]), ("environment-yml", ["environment-yml", "--check"])):
        assert hooks[hook]["entry"] == f"{PYTHON} -m course_utils {' '.join(argv)}"
        assert f"main({argv!r})".replace("'", '"') in tests_text, f"no test of make test runs {argv}"
