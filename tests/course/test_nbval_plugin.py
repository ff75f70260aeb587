"""nbval as `make test` runs it: checked outputs compared through the workbook's sanitize file, key figures recorded
by the same execution and checked after each notebook's last cell (course_utils.course.nbval_plugin)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from nb_builders import code, markdown, notebook
from nbformat.v4 import new_output

from course_utils.course.release import read_notebook, solution_notebooks, write_notebook
from course_utils.ground import paths

SANITIZE = paths.REPO_ROOT / "tests" / "nbval_sanitize.cfg"
CHECK = "# NBVAL_CHECK_OUTPUT"


def _stored(cell, *outputs):
    """``cell`` as a solution stores it: executed, with ``outputs``."""
    cell.execution_count = 1
    cell.outputs = list(outputs)
    return cell


def _books(folder: Path) -> tuple[Path, Path]:
    # A checked cell whose progress bar differs (the live widget's first line against the settled final one, at
    # another rate), and a checked cell that prints another number than the stored one.
    bar = ('from tqdm.auto import tqdm\nfor _ in tqdm(range(8), desc="Map"):\n    pass\nprint("832 tokens")')
    measured = notebook([
        _stored(code('from course_utils.reporting.key_figures import record\nrecord("tokens", 832, "tokens")')),
        _stored(code(f"{CHECK}\n{bar}"),
                new_output("display_data", data={"text/plain": "Map: 100%|##########| 8/8 [00:00<00:00, 1234.56it/s]"}),
                new_output("stream", name="stdout", text="832 tokens\n")),
        _stored(code(f'{CHECK}\nprint("864 tokens")'), new_output("stream", name="stdout", text="832 tokens\n")),
    ])
    silent = notebook([_stored(code("x = 1"))])  # records no key figure
    # A sentence tied to a figure that this execution contradicts: 832 tokens are not more than a thousand.
    claim = markdown("The corpus holds more than a thousand tokens.")
    claim.metadata["claims"] = [{"sentence": "more than a thousand tokens", "holds": "tokens > 1000"}]
    claimed = notebook([_stored(code('from course_utils.reporting.key_figures import record\nrecord("tokens", 832)')),
                        claim])
    paths_written = folder / "01_measured.ipynb", folder / "02_silent.ipynb", folder / "03_claimed.ipynb"
    for book, path in zip((measured, silent, claimed), paths_written):
        write_notebook(book, path)
    return paths_written


def _nbval(folder: Path, *options: str) -> dict[str, str]:
    """Run pytest with nbval and the plugin in ``folder``, as `make test` does; the outcome of each test by id."""
    report = folder / "report.json"
    env = {**os.environ, "COURSE_BUILD_DIR": str(folder / "build"), "PYTHONPATH": str(folder)}
    env.pop("COURSE_FIGURES_FILE", None)
    plugin = folder / "outcomes.py"
    plugin.write_text(
        "import json\nOUTCOMES = {}\n"
        "def pytest_runtest_logreport(report):\n"
        "    if report.when == 'call' or report.outcome != 'passed':\n"
        "        OUTCOMES[report.nodeid] = report.outcome\n"
        "def pytest_sessionfinish(session):\n"
        f"    open({str(report)!r}, 'w').write(json.dumps(OUTCOMES))\n"
    )
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", f"--rootdir={folder}", "-p", "no:cacheprovider", "-p", "no:xdist", "-p", "outcomes",
         "-p", "course_utils.course.nbval_plugin", "--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout", "60",
         *options, "01_measured.ipynb", "02_silent.ipynb", "03_claimed.ipynb"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=300,
    )
    assert report.exists(), ran.stdout[-3000:] + ran.stderr[-3000:]
    return json.loads(report.read_text())


@pytest.mark.slow
def test_nbval_fails_a_changed_checked_output_and_passes_a_progress_bar_that_differs(tmp_path):
    _books(tmp_path)
    outcomes = _nbval(tmp_path, f"--nbval-sanitize-with={SANITIZE}")
    assert outcomes == {
        "01_measured.ipynb::Cell 0": "passed",
        "01_measured.ipynb::Cell 1": "passed",  # the bar differs, the sanitize file makes it the same
        "01_measured.ipynb::Cell 2": "failed",  # 864 is not 832
        "01_measured.ipynb::after the run": "passed",
        "02_silent.ipynb::Cell 0": "passed",
        "02_silent.ipynb::after the run": "failed",  # no key figure
        "03_claimed.ipynb::Cell 0": "passed",
        "03_claimed.ipynb::after the run": "failed",  # its sentence says more than 1000, the run measured 832
    }
    figures = json.loads((tmp_path / "build" / "nbval" / "01_measured.figures.json").read_text())
    assert figures == {"tokens": {"value": 832, "unit": "tokens"}}
    assert "COURSE_FIGURES_FILE" not in os.environ

    unsanitized = _nbval(tmp_path)
    assert unsanitized["01_measured.ipynb::Cell 1"] == "failed"  # the bars do differ: the sanitize file is needed


def test_every_checked_cell_of_a_solution_has_a_stored_output_to_compare_with():
    # nbval compares nothing in a cell that was never executed: a marked cell without outputs would check nothing.
    unchecked = [f"{path.name} cell {index}" for path in solution_notebooks()
                 for index, cell in enumerate(read_notebook(path).cells)
                 if cell.cell_type == "code" and CHECK in cell.source.split("\n")
                 and (cell.get("execution_count") is None or not cell.get("outputs"))]
    assert not unchecked, f"re-execute with `python -m course_utils run --update-solutions`: {unchecked}"


def test_the_sanitize_file_is_short_and_explained():
    lines = SANITIZE.read_text(encoding="utf-8").splitlines()
    rules = [line for line in lines if line.startswith("regex: ")]
    assert 1 <= len(rules) <= 5
    assert all(line.startswith(("#", "regex: ", "replace: ")) or not line.strip() for line in lines)
