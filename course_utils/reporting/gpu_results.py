"""The README's "Measured on a GPU" section, rendered from ``build/gpu/results.json`` (never typed by hand).

``scripts/gpu_check.py`` (``make gpu-check``) writes the results file; :func:`update_readme` replaces the text
between the two markers in README.md with :func:`render`'s markdown. A smoke run (``--smoke``, on a CPU) checks
the script, not the hardware, so it renders the same "no GPU measurement" text as no file at all.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from course_utils.ground import paths
from course_utils.reporting.tables import markdown_table

START = "<!-- gpu-results:start (rendered by scripts/gpu_check.py from build/gpu/results.json; do not edit) -->"
END = "<!-- gpu-results:end -->"


def results_file() -> Path:
    return paths.REPO_ROOT / "build" / "gpu" / "results.json"


def load(path: Path | None = None) -> dict[str, Any] | None:
    """The results of the last run, or None when there is no results file."""
    path = path or results_file()
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _number(value: Any, digits: str = ",.0f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, digits)


def render(results: dict[str, Any] | None) -> str:
    """The section's markdown for ``results`` (None, or a smoke run: says that no GPU measurement was made).

    A run may hold some sections only (``--only``), or stop during one: each part renders what it holds, and a
    section that did not finish says so.
    """
    if not results or results.get("mode") != "gpu":
        return ("No GPU measurement has been made yet: no CUDA GPU was at hand when this was written. "
                "`make gpu-check` on a machine with one writes `build/gpu/results.json`, and "
                "`python scripts/gpu_check.py --render-readme` puts its figures here.")
    env = results["environment"]
    lines = [f"Measured by `make gpu-check` on {env['gpu']} (compute capability {env['compute capability']}), "
             f"driver {env['driver']}, CUDA {env['cuda']}, torch {env['torch']}; "
             + ", ".join(f"{name} {version}" for name, version in env["packages"].items()) + "."]
    ladder = results.get("ladder")
    if ladder and ladder.get("rows"):
        lecture = {row["row (lecture)"]: row for row in ladder.get("lecture", [])}
        lines += ["", f"Speed ladder of notebook 03 (GPT-2 124M shape, batch {ladder['batch']} x {ladder['seq_len']} "
                  f"tokens, {ladder['steps']} timed steps per row; the lecture's A100 table is a claim):", ""]
        rows = [[row["name"], _number(row.get("tokens_per_second")), _number(row.get("peak_memory_mib"), ",.0f"),
                 _number(row.get("speedup"), ".2f"), row.get("note", "")] for row in ladder["rows"]]
        lines.append(markdown_table(["row", "tokens/s", "peak MiB", "x baseline", "note"], rows))
        if lecture:
            lines += ["", markdown_table(["lecture's row (A100, claimed)", "tokens/s", "x baseline"],
                                         [[name, row["tokens/s"], row["x baseline"]] for name, row in lecture.items()])]
    elif ladder:
        lines += ["", f"Speed ladder: {ladder.get('status', 'not run')}."]
    finetune = results.get("finetune") or {}
    titles = (("lora_vs_qlora", "LoRA against QLoRA"),
              ("t4_shaped", "The colab profile T4-shaped (fp16, GPU memory capped at 15 GiB, no FlashAttention)"),
              ("unsloth_vs_peft", "Unsloth against PEFT"))
    for key, title in titles:
        part = finetune.get(key)
        if not part or not part.get("rows"):
            continue
        lines += ["", f"{title} ({part['model']}, {part['steps']} steps of {part['batch']}, seed {part['seed']}):", ""]
        lines.append(markdown_table(
            ["run", "measured", "s per step", "tokens/s", "peak MiB", "held-out loss"],
            [[row["run"], row["status"], _number(row.get("seconds per step"), ".3f"),
              _number(row.get("tokens per second")), _number(row.get("peak MiB"), ",.0f"),
              _number(row.get("held-out loss"), ".3f")] for row in part["rows"]]))
        for claim in [part["verdict"]] if part.get("verdict") else part.get("claims", []):
            lines.append(f"\n{claim}")
    if finetune and finetune.get("status") != "done":
        lines += ["", f"Fine-tuning section: {finetune.get('status')}."]
    notebooks = (results.get("notebooks") or {}).get("rows", [])
    if notebooks:
        lines += ["", markdown_table(["notebook (colab profile, on the GPU, stand-ins)", "status", "seconds"],
                                     [[n["notebook"], n["status"], _number(n.get("seconds"), ".0f")] for n in notebooks])]
    return "\n".join(lines)


def update_readme(readme: Path | None = None, results: dict[str, Any] | None = None) -> bool:
    """Replace the section between the markers with :func:`render`'s text; True when README.md changed."""
    return replace_section(readme or paths.REPO_ROOT / "README.md", START, END, render(results), "the GPU results")


def readme_section(readme: Path | None = None) -> str:
    """The text README.md holds between the markers now."""
    return section_text(readme or paths.REPO_ROOT / "README.md", START, END)


def replace_section(readme: Path, start: str, end: str, body: str, what: str) -> bool:
    """Put ``body`` between the ``start`` and ``end`` markers of ``readme``; True when the file changed."""
    text = readme.read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise ValueError(f"{readme.name} has no '{start}' ... '{end}' markers to render {what} between.")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    new = f"{head}{start}\n{body}\n{end}{tail}"
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return new != text


def section_text(readme: Path, start: str, end: str) -> str:
    """The text ``readme`` holds between the markers now."""
    return readme.read_text(encoding="utf-8").split(start, 1)[1].split(end, 1)[0].strip("\n")
