"""The README's front door: one row per notebook, rendered from what was measured (never typed by hand).

``python -m course_utils readme-notebooks`` replaces the text between :data:`START` and :data:`END` in README.md
with :func:`render`'s table: each notebook's title (linked to the student version in ``notebooks/``), its Colab
badge (pointing at ``notebooks/``, which students open), what it builds on (its title cell's ``Builds on:`` line),
its time on the tiny profile from the last ``make run`` (``build/summary.json``, written by
:mod:`course_utils.course.runner`) and its time on a GPU from ``make gpu-check`` (``build/gpu/results.json``), or
"not measured yet" where no such run exists.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from course_utils.course.release import (
    BUILDS_ON_PREFIX,
    COLAB_BADGE_IMAGE,
    badge_url,
    read_notebook,
    solution_notebooks,
)
from course_utils.ground import paths
from course_utils.reporting import gpu_results

START = ("<!-- notebooks:start (rendered by `python -m course_utils readme-notebooks` from build/summary.json and "
         "build/gpu/results.json; do not edit) -->")
END = "<!-- notebooks:end -->"
NOT_MEASURED = "not measured yet"
_SIBLING_LINK = re.compile(r"\]\((\d{2}_[\w.-]+\.ipynb)\)")


def summary_file() -> Path:
    return paths.build_dir() / "summary.json"


def load_summary(path: Path | None = None) -> dict[str, Any] | None:
    """``make run``'s summary (None when it has not run here)."""
    path = path or summary_file()
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def builds_on(notebook: Path) -> str:
    """The title cell's ``Builds on:`` text, its links to sibling notebooks made relative to the README."""
    lines = read_notebook(notebook).cells[0].source.split("\n")
    text = next((line.removeprefix(BUILDS_ON_PREFIX) for line in lines if line.startswith(BUILDS_ON_PREFIX)), "")
    return _SIBLING_LINK.sub(r"](notebooks/\1)", text)


def title_of(notebook: Path) -> str:
    """The title after ``# NN · `` on the first line."""
    first = read_notebook(notebook).cells[0].source.split("\n", 1)[0]
    return re.sub(r"^#\s*\d{2}\s*·\s*", "", first).strip()


def cpu_time(summary: dict[str, Any] | None, name: str) -> str:
    """``23 s`` from ``make run``'s summary, or why there is no time."""
    result = next((row for row in (summary or {}).get("results", []) if row.get("notebook") == name), None)
    if result is None:
        return "not run yet"
    return f"{result['seconds']:.0f} s" if result.get("status") == "ok" else f"{result.get('status')} (no time)"


def gpu_time(results: dict[str, Any] | None, name: str) -> str:
    """The GPU run's time for ``name`` (``make gpu-check``), or :data:`NOT_MEASURED`."""
    if not results or results.get("mode") != "gpu":
        return NOT_MEASURED
    row = next((row for row in results.get("notebooks", []) if row.get("notebook") == name), None)
    if row is None or row.get("status") != "ok" or row.get("seconds") is None:
        return NOT_MEASURED
    return f"{row['seconds']:.0f} s on {results['environment']['gpu']} (`make gpu-check`'s parameters)"


def render(summary: dict[str, Any] | None, gpu: dict[str, Any] | None, notebooks: list[Path]) -> str:
    """The front-door table and a sentence on where its times come from."""
    rows = []
    for notebook in notebooks:
        name = notebook.name
        badge = f"[![Open In Colab]({COLAB_BADGE_IMAGE})]({badge_url(name, 'notebooks')})"
        rows.append([name[:2], f"[{title_of(notebook)}](notebooks/{name})", badge, builds_on(notebook),
                     cpu_time(summary, name), gpu_time(gpu, name)])
    headers = ["", "notebook", "open", "builds on", "tiny profile, CPU", "Colab GPU"]
    table = "\n".join("| " + " | ".join(row) + " |" for row in [headers, ["---"] * len(headers), *rows])
    if summary:
        machine = summary.get("machine", {})
        where = (f"The CPU times are from the last `make run` (`build/summary.json`): {machine.get('cpus')} CPUs, "
                 f"Python {machine.get('python')}, torch {machine.get('torch')}, {machine.get('platform')}.")
    else:
        where = "No `make run` has written `build/summary.json` here yet, so no CPU time is shown."
    gpu_where = ("The GPU times are from `make gpu-check` (`build/gpu/results.json`)." if gpu and
                 gpu.get("mode") == "gpu" else "No GPU run exists yet: `make gpu-check` on a CUDA machine measures one.")
    return f"{table}\n\n{where} {gpu_where} Every notebook runs on its own: none reads a file that an earlier one wrote."


def update_readme(readme: Path | None = None, summary: dict[str, Any] | None = None,
                  gpu: dict[str, Any] | None = None, notebooks: list[Path] | None = None) -> bool:
    """Render between the markers of README.md (by default from the build files); True when it changed."""
    summary = load_summary() if summary is None else summary
    gpu = gpu_results.load() if gpu is None else gpu
    body = render(summary, gpu, notebooks or solution_notebooks())
    return gpu_results.replace_section(readme or paths.REPO_ROOT / "README.md", START, END, body, "the notebook table")


def readme_section(readme: Path | None = None) -> str:
    """The text README.md holds between the markers now."""
    return gpu_results.section_text(readme or paths.REPO_ROOT / "README.md", START, END)
