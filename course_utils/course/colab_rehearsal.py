"""The colab profile rehearsed on a CPU: hub stand-ins in a temporary HF_HOME, then every notebook with papermill.

``make test-colab`` (``python -m course_utils rehearse``) builds the stand-ins of
:mod:`course_utils.course.hub_standins`, points ``HF_HOME`` at them with ``HF_HUB_OFFLINE=1``, and executes each solution
notebook with ``PROFILE="colab"`` and ``DEVICE="cpu"``. Every other value the colab branch picks stays as it is,
except the step counts and sizes listed in :data:`REHEARSAL_PARAMETERS`: the smallest that the notebook's
parameters cell accepts, so that a CPU gets through in minutes. The rehearsal proves that the colab branch runs
and produces the right shapes, dtypes and files; its scores, on random weights, mean nothing.
"""

from __future__ import annotations

import ast
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from course_utils.course.release import cell_tags, read_notebook, solution_notebooks
from course_utils.course.runner import RunResult, environ, run_notebook, write_summary
from course_utils.ground import paths

# Per notebook (by number): the parameters that cut time, each the smallest its cell allows. DEVICE is "cpu" for all.
REHEARSAL_PARAMETERS: dict[str, dict[str, Any]] = {
    "00": {},
    "01": {"COMPRESS_MAX_MB": 2, "BENCHMARK_REPEATS": 2, "BENCHMARK_MB": 4},
    "02": {"KV_NEW_TOKENS": 24, "KV_REPEATS": 1},
    "03": {"TRAIN_STEPS": 2, "BATCH_SIZE": 2, "EVAL_BATCHES": 1, "OVERFIT_TOKENS": 600,
           "OVERFIT_STEPS": 4,  # one evaluation every 4 steps
           "LADDER_STEPS": 1, "LADDER_BATCH": 1, "LADDER_LENGTH": 64,
           "DDP_STEPS": 5},  # the DDP script evaluates every 5 steps: fewer gives nothing to compare
    "04": {"TRAIN_STORIES": 40, "VAL_STORIES": 8, "BATCH_SIZE": 2, "STEPS": 2, "BLACKBOX_PROMPTS": 4,
           "BLACKBOX_NEW_TOKENS": 8, "BLACKBOX_STEPS": 2, "SPEED_NEW_TOKENS": 4},
    "05": {"TRAIN_STEPS": 2, "SEEDS": [0, 1], "SEED_STEPS": 2, "BATCH_SIZE": 2, "TEST_EXAMPLES": 4},
    "06": {"TRAIN_STEPS": 2, "BATCH_SIZE": 2, "TEST_EXAMPLES": 4, "LAUNCH_STEPS": 1},
}
COMMON_PARAMETERS: dict[str, Any] = {"DEVICE": "cpu"}


def notebook_key(notebook: Path) -> str:
    """The number a notebook's file name starts with ("03" for 03_pretraining_a_gpt.ipynb)."""
    return notebook.name.split("_", 1)[0]


def parameter_names(notebook: Path) -> set[str]:
    """The names the notebook's ``parameters`` cell assigns."""
    nb = read_notebook(notebook)
    cell = next((c for c in nb.cells if "parameters" in cell_tags(c)), None)
    if cell is None:
        raise ValueError(f"{notebook.name} has no cell tagged 'parameters'")
    return {target.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)}


def rehearsal_parameters(notebook: Path) -> dict[str, Any]:
    """The papermill parameters of ``notebook``'s rehearsal; raises if one names no parameter of the notebook."""
    wanted = {"PROFILE": "colab", **COMMON_PARAMETERS, **REHEARSAL_PARAMETERS.get(notebook_key(notebook), {})}
    unknown = sorted(set(wanted) - parameter_names(notebook))
    if unknown:
        raise KeyError(f"{notebook.name}'s parameters cell has no {', '.join(unknown)}: update "
                       "REHEARSAL_PARAMETERS in course_utils/course/colab_rehearsal.py to the notebook's names.")
    return wanted


def rehearse(notebooks: Sequence[Path] | None = None, *, out_dir: Path | None = None, hf_home: Path | None = None,
             cell_timeout: float = 900, verbose: bool = True) -> list[RunResult]:
    """Build the stand-ins (in ``hf_home``, default a temporary folder) and run each notebook on the colab profile.

    Executed notebooks, figures and ``summary.md`` go to ``out_dir`` (default ``build/colab``).
    """
    from course_utils.course.hub_standins import build_standins

    notebooks = list(notebooks) if notebooks is not None else solution_notebooks()
    out = Path(out_dir) if out_dir is not None else paths.build_dir() / "colab"
    for notebook in notebooks:  # fail before minutes of building when a parameter name is stale
        rehearsal_parameters(notebook)
    with tempfile.TemporaryDirectory(prefix="hf_home_") as scratch:
        home = Path(hf_home) if hf_home is not None else Path(scratch)
        if verbose:
            print(f"building the hub stand-ins in {'a temporary HF_HOME' if hf_home is None else home} ...", flush=True)
        build_standins(home, verbose=verbose)
        results = []
        with environ({"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}):
            for notebook in notebooks:
                if verbose:
                    print(f"running {notebook.name} (profile colab, device cpu) ...", flush=True)
                result = run_notebook(notebook, profile="colab", output=out / "executed" / notebook.name,
                                      figures_file=out / "figures" / f"{notebook.stem}.json",
                                      cell_timeout=cell_timeout, parameters=rehearsal_parameters(notebook))
                if verbose:
                    print(f"  {result.status} in {result.seconds:.1f} s"
                          + (f" at {result.failed_cell}: {result.error}" if not result.ok else ""), flush=True)
                results.append(result)
    markdown = write_summary(results, out, profile="colab (rehearsed on a CPU with hub stand-ins)")
    if verbose:
        print(markdown)
    return results
