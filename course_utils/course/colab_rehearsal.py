"""The colab profile rehearsed on a CPU: hub stand-ins in a temporary HF_HOME, then every notebook with papermill.

``make test-colab`` (``python -m course_utils rehearse``) builds the stand-ins of
:mod:`course_utils.course.hub_standins`, points ``HF_HOME`` at them with ``HF_HUB_OFFLINE=1``, and executes each solution
notebook with ``PROFILE="colab"`` and ``DEVICE="cpu"``. Every other value the colab branch picks stays as it is,
except the step counts and sizes listed in :data:`REHEARSAL_PARAMETERS`: the smallest that the notebook's
parameters cell accepts, so that a CPU gets through in minutes. The rehearsal proves that the colab branch runs
and produces the right shapes, dtypes and files; its scores, on random weights, mean nothing.

The notebooks run in virtual environments that hold Colab's versions (constraints/colab-runtime.txt) with what
the setup cell installs on top (constraints/colab.txt; for notebooks 05-06 the GPU path's colab-gpu.txt without
Unsloth itself, which needs a GPU), and this machine's CPU torch in place of Colab's CUDA one. The kernel is that
environment's Python, but it is this machine's Python (3.11 in CI), not Colab's (3.13): the summary says so.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from course_utils.course import colab_runtime, project
from course_utils.course.release import solution_notebooks
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
    "05": {"TRAIN_STEPS": 2, "SEEDS": [0, 1], "BATCH_SIZE": 2, "TEST_EXAMPLES": 4},
    "06": {"TRAIN_STEPS": 2, "BATCH_SIZE": 2, "TEST_EXAMPLES": 4, "LAUNCH_STEPS": 1},
    "07": {"REQUESTS": 6, "RATES": [10.0, 160.0], "OUTPUT_LENGTHS": [2, 4], "ADAPTER_STEPS": 2, "ADAPTER_BATCH": 4,
           "ADAPTER_NEW_TOKENS": 2, "REPEATS": 2},
    "08": {"EVAL_ITEMS": 4, "SFT_STEPS": 2, "DPO_STEPS": 1, "DPO_SEEDS": [0, 1], "JUDGE_ITEMS": 2},
}
COMMON_PARAMETERS: dict[str, Any] = {"DEVICE": "cpu"}


def notebook_key(notebook: Path) -> str:
    """The number a notebook's file name starts with ("03" for 03_pretraining_a_gpt.ipynb)."""
    return notebook.name.split("_", 1)[0]


def parameter_names(notebook: Path) -> set[str]:
    """The names the notebook's ``parameters`` cell assigns, as papermill reads them."""
    import papermill

    names = set(papermill.inspect_notebook(str(notebook)))
    if not names:
        raise ValueError(f"{notebook.name} has no cell tagged 'parameters' (or it assigns nothing)")
    return names


def rehearsal_parameters(notebook: Path) -> dict[str, Any]:
    """The papermill parameters of ``notebook``'s rehearsal; raises if one names no parameter of the notebook."""
    wanted = {"PROFILE": "colab", **COMMON_PARAMETERS, **REHEARSAL_PARAMETERS.get(notebook_key(notebook), {})}
    unknown = sorted(set(wanted) - parameter_names(notebook))
    if unknown:
        raise KeyError(f"{notebook.name}'s parameters cell has no {', '.join(unknown)}: update "
                       "REHEARSAL_PARAMETERS in course_utils/course/colab_rehearsal.py to the notebook's names.")
    return wanted


# ---------------------------------------------------------------------------------------------------------------
# The environments: Colab's versions, CPU torch


@dataclass(frozen=True)
class ColabVenv:
    """One rehearsal environment: what it installs on top of Colab's versions, and the notebooks it runs."""

    name: str
    tested: str  # the setup cell's constraints file in constraints/
    extras: tuple[str, ...]
    notebooks: tuple[str, ...]
    cannot_run_here: str = ""  # why its notebooks need a GPU; the environment is then built and its imports probed


# TRL 1.15 (the GPU path's cap, Unsloth's) trains only through its Triton fused LM head: on a CPU, SFTTrainer's
# first step fails ("'NoneType' object has no attribute 'apply'" without triton; with it, Triton finds no GPU
# driver). So the [gpu] environment is built and probed here, and its notebooks run in `make gpu-check`. Notebook 06
# runs in the first environment: the setup cell's own path where Colab's torch is outside Unsloth's range.
TRL_NEEDS_A_GPU = ("TRL 1.15's SFTTrainer trains only through its Triton fused LM head, which needs a GPU: "
                   "notebooks 05 and 06 on these versions run in `make gpu-check`")
VENVS = (ColabVenv("colab-venv", "colab.txt", (), ("00", "01", "02", "03", "04", "05", "06", "07", "08")),
         ColabVenv("colab-gpu-venv", "colab-gpu.txt", ("gpu",), (), cannot_run_here=TRL_NEEDS_A_GPU))
# What the probe of an environment whose notebooks cannot run here checks: the libraries import, at the versions the
# setup cell's constraints name, and the notebooks' training configuration builds.
PROBE = """
import importlib.metadata as m, json, sys
import peft, transformers, trl, datasets
from trl import SFTConfig, SFTTrainer
SFTConfig(output_dir="/tmp/probe", max_steps=1, report_to=[], use_cpu=True, bf16=False)
pins = json.loads(sys.argv[1])
wrong = {n: (m.version(n), v) for n, v in pins.items() if m.version(n) != v}
assert not wrong, f"installed versions differ from the constraints: {wrong}"
print(", ".join(f"{n} {m.version(n)}" for n in pins))
"""


def probe_venv(venv: ColabVenv, where: Path) -> str:
    """Import the training libraries in ``where`` and check their versions against ``venv``'s constraints."""
    pins = {name: version for name, version in venv_constraints(venv).items()
            if name in ("transformers", "trl", "datasets", "peft", "accelerate")}
    done = subprocess.run([str(where / "bin" / "python"), "-c", PROBE, json.dumps(pins)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{venv.name}: the probe failed:\n{done.stderr[-2000:]}")
    return done.stdout.strip()
# Colab's CUDA torch is replaced by this machine's CPU build (and what is built for one torch goes with it);
# setuptools too: torch 2.13 needs >= 77, Colab's 75.2 suits its torch 2.11.
REPLACED = re.compile(r"^(torch|torchvision|torchaudio|triton|xformers|nvidia-.*|cuda-.*|setuptools)$")
# Needs a GPU: the GPU environment holds the versions Unsloth resolves beside, without Unsloth itself.
NEEDS_GPU = re.compile(r"^unsloth(-zoo)?$")
# Colab's versions that need a newer Python than this machine's (Colab runs 3.13, CI 3.11): scipy 1.18 needs 3.12
# (lm-eval's scikit-learn pulls it in). Here pip takes the newest release that installs on this Python instead.
NEEDS_NEWER_PYTHON = {"scipy": (3, 12)}
PYTHON = sys.version_info[:2]
CPU_TORCH = "torch==2.13.0"  # the nearest to Colab's 2.11 that CI's CPU wheels have
KERNEL_NAME = "colab-rehearsal"


def venv_constraints(venv: ColabVenv) -> dict[str, str]:
    """Colab's versions, overridden by the setup cell's constraints, less what the CPU machine replaces."""
    pins = dict(colab_runtime.load().packages)
    for line in (paths.REPO_ROOT / "constraints" / venv.tested).read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[colab_runtime.canonical(name)] = version.strip()
    return {name: version for name, version in sorted(pins.items())
            if not REPLACED.match(name) and not NEEDS_GPU.match(name)
            and NEEDS_NEWER_PYTHON.get(name, PYTHON) <= PYTHON}


def venv_requirements(venv: ColabVenv) -> list[str]:
    """What the environment installs: the workbook, its extras less Unsloth, CPU torch and papermill's kernel."""
    extra = [str(r) for extra in venv.extras for r in project.requirements(extra)
             if not NEEDS_GPU.match(colab_runtime.canonical(r.name))]
    return [CPU_TORCH, "-e", str(paths.REPO_ROOT), *extra, "papermill", "ipykernel"]


def build_venv(venv: ColabVenv, root: Path | None = None, *, verbose: bool = True) -> Path:
    """Create (or reuse, when its constraints are unchanged) ``build/<name>`` and register its kernel; its path."""
    from course_utils.course.install_torch import CPU_INDEX, index_reachable

    where = Path(root) if root is not None else paths.build_dir() / venv.name
    constraints = "".join(f"{name}=={version}\n" for name, version in venv_constraints(venv).items())
    requirements = venv_requirements(venv)
    stamp_text = hashlib.sha256((constraints + "\n".join(requirements)).encode()).hexdigest()
    stamp = where / ".rehearsal-installed"
    if stamp.exists() and stamp.read_text() == stamp_text:
        if verbose:
            print(f"{venv.name}: up to date ({where})", flush=True)
        return where
    start = time.perf_counter()
    if not (where / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    where.mkdir(parents=True, exist_ok=True)
    (where / "constraints.txt").write_text(constraints)
    index = ["--extra-index-url", CPU_INDEX] if index_reachable() else []
    python = str(where / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "-c", str(where / "constraints.txt"), *index,
                    *requirements], check=True)
    subprocess.run([python, "-m", "ipykernel", "install", "--prefix", str(where), "--name", KERNEL_NAME],
                   check=True, capture_output=True)
    stamp.write_text(stamp_text)
    if verbose:
        print(f"{venv.name}: built in {time.perf_counter() - start:.0f} s ({where})", flush=True)
    return where


def versions_line(where: Path) -> str:
    """Python and the key packages of an environment, for the summary."""
    code = ("import platform, importlib.metadata as m; names = ['torch', 'transformers', 'peft', 'trl', 'datasets', "
            "'numpy', 'pandas', 'ipywidgets', 'ipykernel']; print(f'Python {platform.python_version()}: ' + ', '"
            ".join(f'{n} {m.version(n)}' for n in names))")
    done = subprocess.run([str(where / "bin" / "python"), "-c", code], capture_output=True, text=True, check=False)
    return done.stdout.strip() or done.stderr.strip()[-200:]


def rehearse_on_colab_versions(only: Sequence[str] | None = None, *, hf_home: Path | None = None,
                               cell_timeout: float = 900, verbose: bool = True) -> list[RunResult]:
    """Each environment of :data:`VENVS` built, then its notebooks (those in ``only``, by number) rehearsed in it."""
    runtime = colab_runtime.load()
    by_key = {notebook_key(path): path for path in solution_notebooks()}
    results = []
    for venv in VENVS:
        keys = [key for key in venv.notebooks if only is None or any(key.startswith(o[:2]) for o in only)]
        if venv.cannot_run_here and only is None:
            where = build_venv(venv, verbose=verbose)
            print(f"{venv.name}: {probe_venv(venv, where)} import and configure; {venv.cannot_run_here}.", flush=True)
        if not keys:
            continue
        where = build_venv(venv, verbose=verbose)
        note = (f"colab profile on Colab's versions of {runtime.date} ({venv.tested}), kernel {venv.name}: "
                f"{versions_line(where)}; Colab runs Python {runtime.python}, this machine "
                f"{platform.python_version()}, and CPU torch stands in for Colab's CUDA torch "
                f"{runtime.packages.get('torch')}")
        if verbose:
            print(note, flush=True)
        results += rehearse([by_key[key] for key in keys], out_dir=paths.build_dir() / "colab" / venv.name,
                            hf_home=hf_home, cell_timeout=cell_timeout, verbose=verbose, venv=where,
                            profile_note=note)
    return results


def rehearse(notebooks: Sequence[Path] | None = None, *, out_dir: Path | None = None, hf_home: Path | None = None,
             cell_timeout: float = 900, verbose: bool = True, venv: Path | None = None,
             profile_note: str = "") -> list[RunResult]:
    """Build the stand-ins (in ``hf_home``, default a temporary folder) and run each notebook on the colab profile.

    Executed notebooks, figures and ``summary.md`` go to ``out_dir`` (default ``build/colab``). With ``venv`` (one
    :func:`build_venv` made) the kernel is that environment's Python; else this one's.
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
        kernel_env = {"JUPYTER_PATH": str(Path(venv) / "share" / "jupyter")} if venv is not None else {}
        with environ({"HF_HOME": str(home), "HF_HUB_OFFLINE": "1", **kernel_env}):
            for notebook in notebooks:
                if verbose:
                    print(f"running {notebook.name} (profile colab, device cpu) ...", flush=True)
                result = run_notebook(notebook, profile="colab", output=out / "executed" / notebook.name,
                                      figures_file=out / "figures" / f"{notebook.stem}.json",
                                      cell_timeout=cell_timeout, parameters=rehearsal_parameters(notebook),
                                      kernel_name=KERNEL_NAME if venv is not None else "python3")
                if verbose:
                    print(f"  {result.status} in {result.seconds:.1f} s"
                          + (f" at {result.failed_cell}: {result.error}" if not result.ok else ""), flush=True)
                results.append(result)
    markdown = write_summary(results, out, profile=profile_note or "colab (rehearsed on a CPU with hub stand-ins)")
    if verbose:
        print(markdown)
    return results
