"""The GPU measurements in one command (``make gpu-check``): the paths no CPU run can show, on one CUDA GPU.

    python scripts/gpu_check.py                            # on a CUDA machine: every section, build/gpu/results.json
    python scripts/gpu_check.py --only ladder --only finetune   # some sections
    python scripts/gpu_check.py --wheels build/gpu/wheels  # first install the batches of scripts/gpu_wheels.sh
    python scripts/gpu_check.py --smoke                    # every section at its smallest size on the CPU (CI)
    python scripts/gpu_check.py --render-readme            # put build/gpu/results.json's figures into README.md

Sections (``--only``), each written into results.json as soon as it ends, so that a run stopped by its time limit
keeps what it measured (a section that fails records why, and the next one runs):

* ``ladder``: the speed ladder of notebook 03 at GPT-2 124M size (fp32, TF32, fused AdamW, 16-bit autocast, SDPA,
  torch.compile, ...), tokens/s and peak memory per row, beside the lecture's A100 table;
* ``finetune``: LoRA against QLoRA (NF4 + double quantization, bitsandbytes) on notebook 05's colab model, the
  same data, steps and seed, each in a fresh process: seconds and tokens per step, peak memory, held-out loss;
  the same two runs T4-shaped (fp16 by the workbook's rule for a T4, the process's GPU memory capped at 15 GiB,
  no FlashAttention), so that "the colab profile fits a free T4" is a measured row; Unsloth against
  transformers + PEFT (where Unsloth cannot be imported, the exact error is the result);
* ``notebooks``: notebooks 05, 06, 07 and 08 on PROFILE="colab" on the GPU, with their seeds, step counts, backend
  comparison, launch processes and Unsloth's GGUF export set by papermill parameters (NOTEBOOK_PARAMETERS).

No network is needed: models are the hub stand-ins of course_utils.course.hub_standins (random weights, real
configs, all layers). ``--budget-s`` (default 400 on a GPU) bounds the whole run: a row or notebook that would
start after it says "not run: time budget", and each one gets only the time left, so that every section ends
within about seven minutes on one H100. On a CPU (``--smoke``) the rows that need CUDA say "not run: no CUDA
GPU"; the smoke run also checks the partial-results write and the wheel plan.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

OUT = ROOT / "build" / "gpu"  # stand-ins, worker files, installed wheels (large: never under the device's $OUT)
RESULTS = OUT / "results.json"
NO_CUDA = "not run: no CUDA GPU"
SECTIONS = ("ladder", "finetune", "notebooks")
GPU_BUDGET_S = 400  # the whole run on a GPU, start-up included: every section ends within about seven minutes
T4_MEMORY = 15 * 2**30  # a free Colab T4's usable memory
PACKAGES = ("transformers", "peft", "trl", "accelerate", "bitsandbytes", "datasets", "unsloth", "unsloth_zoo",
            "xformers", "triton")
# The fine-tuning comparison's model: notebook 05's (colab "finetune" role); the smoke run's is the smallest stand-in.
FINETUNE_MODEL = {"gpu": "Qwen/Qwen2.5-0.5B", "smoke": "HuggingFaceTB/SmolLM2-135M"}
SIZES = {  # ladder batch, length and timed steps; fine-tuning steps, batch and held-out examples, per mode
    "gpu": {"ladder_batch": 8, "ladder_len": 1024, "ladder_steps": 5, "ft_steps": 20, "ft_batch": 16,
            "ft_eval": 64},
    "smoke": {"ladder_batch": 1, "ladder_len": 32, "ladder_steps": 1, "ft_steps": 2, "ft_batch": 2, "ft_eval": 4},
}
# Notebooks 05-08 on the GPU, sized to fit the budget: fewer steps than Colab's, two seeds as long as the first run,
# no second backend (the finetune section compares them), two launch ranks of one step, and no
# save_pretrained_gguf (it downloads and builds llama.cpp: there is no network there).
NOTEBOOK_PARAMETERS = {
    "05": {"SEED": 0, "TRAIN_STEPS": 30, "SEEDS": [0, 1], "TEST_EXAMPLES": 32},
    "06": {"SEED": 0, "TRAIN_STEPS": 30, "TEST_EXAMPLES": 32, "COMPARE_BACKENDS": False, "LAUNCH_PROCESSES": 2,
           "LAUNCH_STEPS": 1, "UNSLOTH_GGUF": False},
    "07": {"SEED": 0, "REPEATS": 3},  # the serving notebook as Colab runs it; vLLM's cell runs where vllm imports
    "08": {"SEED": 0, "EVAL_ITEMS": 64, "SFT_STEPS": 30, "DPO_STEPS": 10, "DPO_SEEDS": [0, 1], "JUDGE_ITEMS": 32},
}
# The hub stand-ins each section loads (notebook 05's colab model is Qwen2.5-0.5B, notebook 06's SmolLM2-135M;
# notebook 08 scores both and judges with SmolLM2-360M).
SECTION_MODELS = {"ladder": (), "finetune": ("{finetune}",),
                  "notebooks": ("Qwen/Qwen2.5-0.5B", "HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/SmolLM2-360M")}


class Budget:
    """The run's time limit: how much is left, and the words for a row that did not start because of it."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.started = time.perf_counter()

    def left(self) -> float | None:
        return None if self.seconds is None else self.seconds - (time.perf_counter() - self.started)

    def spent(self, reserve: float = 0.0) -> bool:
        left = self.left()
        return left is not None and left <= reserve

    @property
    def why(self) -> str:
        return f"not run: the time budget ({self.seconds:.0f} s, --budget-s) was spent"


# ------------------------------------------------------------------------------------------------ installing
def install_wheels(folders: list[Path], target: Path) -> dict[str, Any]:
    """Install every wheel of ``folders`` (no index, no dependency resolution) into one ``target`` on sys.path.

    The folders are what scripts/gpu_wheels.sh wrote (``build/gpu/wheels`` or its ``batch-NN`` folders); torch is
    never among them, so the machine's own torch stays. When the set fails to install, it is installed again without Unsloth
    and the reason is recorded.
    """
    wheels = sorted(str(wheel) for folder in folders for pattern in ("*.whl", "batch-*/*.whl")
                    for wheel in Path(folder).glob(pattern))
    if not wheels:
        return {"status": f"no wheel in {', '.join(map(str, folders))}", "wheels": 0}

    def pip(files: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--upgrade",
                               "--target", str(target), *files], capture_output=True, text=True)

    done = pip(wheels)
    status = {"wheels": len(wheels), "target": str(target), "status": "installed"}
    if done.returncode != 0:
        without = [w for w in wheels if not Path(w).name.lower().startswith("unsloth")]
        status["unsloth"] = "not installed: " + _last_line(done.stderr)
        done = pip(without)
        status["status"] = "installed without Unsloth" if done.returncode == 0 else "failed: " + _last_line(done.stderr)
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), str(ROOT), os.environ.get("PYTHONPATH")]))
    return status


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


# ---------------------------------------------------------------------------------------------- environment
def environment() -> dict[str, Any]:
    """GPU, driver, CUDA, Python, torch and the versions of the libraries the measurements use."""
    import torch

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "cuda": torch.version.cuda, "gpu": None, "compute capability": None, "driver": None}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["compute capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            env["driver"] = "unknown (nvidia-smi did not answer)"
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    env["packages"] = versions
    env["differs from constraints/colab-gpu.txt"] = pin_differences()
    return env


def pin_differences() -> list[str]:
    """The packages of the GPU path found at another version than constraints/colab-gpu.txt pins (what the GPU
    image brought, since scripts/gpu_wheels.sh does not carry what it has)."""
    differences = []
    for line in (ROOT / "constraints" / "colab-gpu.txt").read_text().splitlines():
        if "==" not in line or line.startswith("#"):
            continue
        name, pinned = line.split("==", 1)
        try:
            found = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if found != pinned.strip():
            differences.append(f"{name} {found} (pinned {pinned.strip()})")
    return differences


# --------------------------------------------------------------------------------------------------- ladder
def ladder(mode: str, device: str, budget: Budget) -> dict[str, Any]:
    """Notebook 03's speed ladder at GPT-2 124M size on the GPU (a 2-layer toy on the CPU in smoke mode)."""
    import torch

    from course_utils.models import gpt
    from course_utils.training import speed

    size = dict(SIZES[mode])
    if mode == "gpu":
        cfg = gpt.GPTConfig(vocab_size=50257, context_length=1024, n_embd=768, n_layer=12, n_head=12)
        if torch.cuda.get_device_properties(0).total_memory < 40 * 2**30:  # a T4 or L4: the fp32 row would not fit
            size["ladder_batch"] = 2
    else:
        cfg = gpt.GPTConfig(vocab_size=50257, context_length=64, n_embd=64, n_layer=2, n_head=2)
    if budget.spent():
        return {"status": budget.why}
    rows = speed.run_ladder(cfg, size["ladder_batch"], size["ladder_len"], device=device, steps=size["ladder_steps"],
                            warmup=2 if mode == "gpu" else 1, progress=False)
    notes = speed.ladder_table(rows)
    return {"status": f"measured on {device}", "model": gpt.config_dict(cfg), "parameters": gpt.GPT(cfg).num_parameters(),
            "batch": size["ladder_batch"], "seq_len": size["ladder_len"], "steps": size["ladder_steps"],
            "environment": speed.environment_line(device),
            "rows": [{"name": r.name, "tokens_per_second": r.tokens_per_second, "peak_memory_mib": r.peak_memory_mib,
                      "speedup": r.speedup, "kept": r.kept, "skipped": r.skipped, "note": note["note"]}
                     for r, note in zip(rows, notes)],
            "lecture": speed.lecture_ladder_table()}


# ---------------------------------------------------------------------------------------------- fine-tuning
def t4_shape(device: str) -> str:
    """Make this process see the GPU as a free Colab T4 would be: the workbook's precision rule for compute
    capability 7.5 (fp16 with a GradScaler), GPU memory capped at 15 GiB, and no FlashAttention (a T4 has none).

    The speed is still the big GPU's; what the shape measures is whether the colab profile's run fits.
    """
    import torch

    from course_utils.ground import machine

    if device != "cuda":
        return "T4 shape not applied: no CUDA GPU (the memory cap and fp16 need one)"
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, T4_MEMORY / total), 0)
    torch.backends.cuda.enable_flash_sdp(False)
    t4 = machine.precision_for("cuda", (7, 5), "T4-shaped GPU")
    machine.pick_precision = lambda device=None: t4  # every caller in this worker process asks the module attribute
    return f"T4-shaped: fp16 + GradScaler, memory capped at {T4_MEMORY / 2**30:.0f} of {total / 2**30:.0f} GiB, " \
           "no FlashAttention"


def finetune_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One fine-tuning run (in its own process): notebook 06's loading and TRL training, then the held-out loss.

    The model is loaded and adapted by ``finetune_launch.load_for_training`` (Unsloth's two calls on its path,
    transformers + PEFT on the other), as ``scripts/finetune.py`` does; TRL's ``SFTTrainer`` trains it (counting
    the input tokens of every step) and scores the first ``eval`` validation examples.
    """
    if spec["backend"] == "unsloth":
        try:
            import unsloth  # noqa: F401 - first, before transformers, as Unsloth requires; its error is the result
        except Exception as exc:  # noqa: BLE001 - why it cannot be imported is what gets recorded
            return {"status": f"not run: importing unsloth failed: {type(exc).__name__}: {exc}"}
    import torch
    from transformers import set_seed

    from course_utils.finetuning import finetune_launch, sft_data, trainer_callbacks
    from course_utils.ground import machine, sources

    shape = t4_shape(spec["device"]) if spec.get("t4") else None
    steps, batch, seed = spec["steps"], spec["batch"], spec["seed"]
    args = finetune_launch.parse_args(["--profile", "colab", "--model", spec["model"], "--backend", spec["backend"],
                                       "--load-in-4bit" if spec["load_in_4bit"] else "--no-load-in-4bit",
                                       "--seed", str(seed), "--device", spec["device"], "--chat"])
    use_unsloth, why = finetune_launch.choose_backend(args.backend, args.device)
    from trl import SFTConfig, SFTTrainer

    device = torch.device("cuda", 0) if spec["device"] == "cuda" else torch.device("cpu")
    set_seed(seed)
    model, tokenizer = finetune_launch.load_for_training(args, sources.resolve_model(spec["model"]).location, device,
                                                         spec["load_in_4bit"], use_unsloth)
    data = sources.load_text_dataset("zorbish")
    precision = machine.pick_precision(device)
    no_checkpointing = sft_data.checkpointing_option(False)  # as load_for_training set it; TRL's default is on
    held_out_rows = data["validation"].select(range(min(spec["eval"], len(data["validation"]))))
    with tempfile.TemporaryDirectory() as scratch:
        config = SFTConfig(output_dir=scratch, **no_checkpointing, max_steps=steps, per_device_train_batch_size=batch,
                           per_device_eval_batch_size=batch, learning_rate=5e-4, warmup_steps=min(10, steps // 2),
                           logging_steps=max(1, steps // 10), seed=seed, completion_only_loss=True, max_length=256,
                           bf16=precision.autocast_dtype == torch.bfloat16,
                           fp16=precision.autocast_dtype == torch.float16, use_cpu=device.type == "cpu",
                           include_num_input_tokens_seen="non_padding", report_to="none", save_strategy="no",
                           disable_tqdm=True)
        meter = trainer_callbacks.TrainingMeter()
        trainer = SFTTrainer(model=model, args=config, processing_class=tokenizer, callbacks=[meter],
                             train_dataset=sft_data.sft_rows(data["train"], chat=True),
                             eval_dataset=sft_data.sft_rows(held_out_rows, chat=True))
        if use_unsloth:
            from unsloth.chat_templates import train_on_responses_only

            from course_utils.finetuning.unsloth_backend import chat_markers

            instruction_part, response_part = chat_markers(tokenizer)
            trainer = train_on_responses_only(trainer, instruction_part=instruction_part, response_part=response_part)
        trainer.train()
        held_out = trainer.evaluate()["eval_loss"]
    base = "4-bit NF4" if spec["load_in_4bit"] else str(precision.inference_dtype).replace("torch.", "")
    peak = meter.peak
    row = {"status": f"measured on {spec['device']}, base in {base}, {precision.name}", "backend": why,
           "seconds per step": meter.seconds_per_step, "tokens per second": meter.tokens_per_second,
           "tokens per step": (sum(meter.step_tokens) / len(meter.step_tokens)) if meter.step_tokens else None,
           "peak MiB": peak.peak_bytes / 2**20 if peak else None, "peak measured as": peak.method if peak else None,
           "held-out loss": held_out, "held-out examples": len(held_out_rows),
           "trainable parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    if shape is not None:
        row["shape"] = shape
    return row


def run_worker(spec: dict[str, Any], hf_home: Path, budget: Budget) -> dict[str, Any]:
    """:func:`finetune_worker` in a fresh Python process, offline, on the stand-ins in ``hf_home``, given at most
    the time the budget has left."""
    if budget.spent(reserve=20):  # less than a process start and a model load: it would only be cut off
        return {"run": spec["run"], "status": budget.why}
    out = OUT / "runs" / f"{spec['run'].replace(' ', '_').replace(',', '').replace('+', 'and')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec), "--worker-out", str(out)],
                              env=env, capture_output=True, text=True, timeout=budget.left())
    except subprocess.TimeoutExpired:
        return {"run": spec["run"], "status": f"stopped: the time budget ({budget.seconds:.0f} s) ran out during it"}
    if done.returncode != 0 or not out.exists():
        return {"run": spec["run"], "status": "failed: " + _last_line(done.stderr)}
    return {"run": spec["run"], **json.loads(out.read_text())}


def t4_verdict(rows: list[dict[str, Any]], device: str) -> str:
    """One line: whether the T4-shaped runs completed within the 15 GiB cap, from their rows (never typed)."""
    if device != "cuda":
        return f"Fits a free T4: {NO_CUDA}."
    measured = [row for row in rows if row.get("peak MiB") is not None]
    if len(measured) < len(rows):
        failed = [f"{row['run']}: {row['status']}" for row in rows if row.get("peak MiB") is None]
        return "Fits a free T4: not shown (" + "; ".join(failed) + ")."
    worst = max(row["peak MiB"] for row in measured)
    fits = worst <= T4_MEMORY / 2**20
    return (f"Fits a free T4: {'yes' if fits else 'no'}, measured: the colab profile's runs peaked at "
            f"{worst / 1024:.1f} GiB under a cap of {T4_MEMORY / 2**30:.0f} GiB (fp16, no FlashAttention).")


def finetune(mode: str, device: str, hf_home: Path, budget: Budget,
             write: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """LoRA against QLoRA, the two T4-shaped, and Unsloth against PEFT (QLoRA both): same model, data, steps, seed.

    ``write(part)`` saves the section as it stands after every row, so that a run stopped here keeps those rows.
    """
    from course_utils.finetuning import unsloth_backend

    size, model = SIZES[mode], FINETUNE_MODEL[mode]
    common = {"model": model, "steps": size["ft_steps"], "batch": size["ft_batch"], "eval": size["ft_eval"],
              "seed": 0, "device": device}
    meta = {key: common[key] for key in ("model", "steps", "batch", "seed")}
    part: dict[str, Any] = {"status": "running", "lora_vs_qlora": {**meta, "rows": []},
                            "t4_shaped": {**meta, "rows": [], "cap GiB": T4_MEMORY / 2**30},
                            "unsloth_vs_peft": {**meta, "rows": []}}
    runs = [("lora_vs_qlora", "LoRA, unquantized base", {"backend": "peft", "load_in_4bit": False}),
            ("lora_vs_qlora", "QLoRA, NF4 + double quantization", {"backend": "peft", "load_in_4bit": True}),
            ("t4_shaped", "T4-shaped LoRA", {"backend": "peft", "load_in_4bit": False, "t4": True}),
            ("t4_shaped", "T4-shaped QLoRA", {"backend": "peft", "load_in_4bit": True, "t4": True})]
    for key, run, extra in runs:
        row = run_worker({**common, "run": run, **extra}, hf_home, budget)
        if device == "cpu" and extra["load_in_4bit"] and not row["status"].startswith(("failed", "not run")):
            row["status"] += " (bitsandbytes' CPU kernel: the CUDA kernel was not run)"
        part[key]["rows"].append(row)
        write(part)
    part["t4_shaped"]["verdict"] = t4_verdict(part["t4_shaped"]["rows"], device)
    qlora = part["lora_vs_qlora"]["rows"][1]
    peft_row = {**qlora, "run": "transformers + PEFT (the QLoRA run above)"}
    if device != "cuda":
        installed = "installed" if unsloth_backend.unsloth_installed() else "not installed"
        fast = {"run": "Unsloth", "status": f"{NO_CUDA} (unsloth {installed} here)"}
    else:
        fast = run_worker({**common, "run": "Unsloth", "backend": "unsloth", "load_in_4bit": True}, hf_home, budget)
    claims = unsloth_backend.PUBLISHED_CLAIMS
    verdicts = [f"Unsloth claims {claims['speed']} and {claims['memory']} than {claims['against']} (its README)."]
    if "seconds per step" in fast and "seconds per step" in peft_row:
        speedup = peft_row["seconds per step"] / fast["seconds per step"]
        saved = 1 - fast["peak MiB"] / peft_row["peak MiB"] if peft_row.get("peak MiB") else float("nan")
        verdicts.append(f"Measured here: {speedup:.2f}x the steps per second, {saved:.0%} less peak memory.")
    else:
        verdicts.append("Measured here: nothing to compare (" + fast["status"] + ").")
    part["unsloth_vs_peft"].update(rows=[fast, peft_row], claims=verdicts)
    part["status"] = "done"
    return part


# ------------------------------------------------------------------------------------------------ notebooks
def notebook_parameters(path: Path) -> set[str]:
    """The names the ``parameters`` cell of a notebook assigns."""
    import re

    from course_utils.course.release import read_notebook

    cell = next(c for c in read_notebook(path).cells if "parameters" in c.metadata.get("tags", []))
    return set(re.findall(r"^([A-Z_][A-Z0-9_]*)\s*=", cell.source, flags=re.M))


def notebooks(device: str, hf_home: Path, budget: Budget, results_dir: Path,
              write: Callable[[dict[str, Any]], None] = lambda part: None) -> dict[str, Any]:
    """Notebooks 05, 06, 07 and 08 on PROFILE="colab" on the GPU, offline, on the stand-ins (NOTEBOOK_PARAMETERS);
    ``write(part)`` saves the section after each notebook. Executed copies go to ``results_dir/executed``."""
    from course_utils.course.release import solution_notebooks
    from course_utils.course.runner import environ, run_notebook

    chosen = [nb for nb in solution_notebooks() if nb.name[:2] in NOTEBOOK_PARAMETERS]
    for nb in chosen:  # papermill would inject a misspelt name as a new variable that nothing reads
        unknown = sorted(set(NOTEBOOK_PARAMETERS[nb.name[:2]]) - notebook_parameters(nb))
        if unknown:
            raise ValueError(f"{nb.name} has no parameter {', '.join(unknown)} in its parameters cell")
    if device != "cuda":
        return {"status": "done", "rows": [
            {"notebook": nb.name, "status": f"{NO_CUDA} (make test-colab runs it on the CPU)",
             "parameters": NOTEBOOK_PARAMETERS[nb.name[:2]]} for nb in chosen]}
    rows: list[dict[str, Any]] = []
    part = {"status": "running", "rows": rows}
    with environ({"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}):
        for nb in chosen:
            parameters = NOTEBOOK_PARAMETERS[nb.name[:2]]
            if budget.spent(reserve=30):
                rows.append({"notebook": nb.name, "status": budget.why, "parameters": parameters})
                continue
            result = run_notebook(nb, profile="colab", output=results_dir / "executed" / nb.name,
                                  figures_file=OUT / "figures" / f"{nb.stem}.json",
                                  cell_timeout=max(30.0, budget.left() or 600.0),
                                  parameters={"PROFILE": "colab", **parameters})
            rows.append({"notebook": nb.name, "status": result.status if result.ok else
                         f"failed at {result.failed_cell}: {result.error}", "seconds": result.seconds,
                         "parameters": parameters, "figures": result.figures,
                         "failed claims": result.failed_claims})  # reported, not failing: the GPU's own figures
            write(part)
    part["status"] = "done"
    return part


# ------------------------------------------------------------------------------------------------- sections
def write_results(results: dict[str, Any], path: Path) -> None:
    """Write ``results`` whole and at once (a new file renamed over the old), so that a reader never sees half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    fresh.replace(path)


def run_sections(sections: dict[str, Callable[[], dict[str, Any]]], results: dict[str, Any], path: Path,
                 verbose: bool = True) -> None:
    """Run each section in order and write ``results`` after each one. A section that raises records why and the
    next one runs; an interruption (Ctrl-C, the command's time limit sending SIGTERM) records where it stopped,
    writes, and stops. Either way the sections before it stay in the file."""
    for name, section in sections.items():
        if verbose:
            print(f"[gpu-check] {name} ...", flush=True)
        results[name] = {"status": "running"}
        write_results(results, path)  # a run killed outright (SIGKILL) still says which section it was in
        started = time.perf_counter()
        try:
            results[name] = section()
        except KeyboardInterrupt:
            results[name] = {**results[name], "status": "interrupted: the run was stopped during this section"}
            write_results(results, path)
            raise
        except Exception as exc:  # noqa: BLE001 - one section's failure is its result; the others still run
            results[name] = {**results[name], "status": f"failed: {type(exc).__name__}: {str(exc)[:300]}"}
        results[name]["seconds"] = round(time.perf_counter() - started, 1)
        write_results(results, path)


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# -------------------------------------------------------------------------------------------- smoke checks
def check_partial_write() -> str:
    """A planted failure and a planted interruption leave the sections before them in results.json."""
    import contextlib
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "results.json"

        def fails() -> dict[str, Any]:
            raise RuntimeError("planted failure")

        def interrupted() -> dict[str, Any]:
            raise KeyboardInterrupt

        results: dict[str, Any] = {"mode": "smoke"}
        run_sections({"ladder": lambda: {"status": "done", "rows": [1]}, "finetune": fails,
                      "notebooks": lambda: {"status": "done"}}, results, path, verbose=False)
        saved = json.loads(path.read_text())
        assert saved["ladder"]["rows"] == [1] and saved["finetune"]["status"].startswith("failed: RuntimeError")
        assert saved["notebooks"]["status"] == "done", saved
        with contextlib.suppress(KeyboardInterrupt):
            run_sections({"ladder": lambda: {"status": "done", "rows": [2]}, "finetune": interrupted,
                          "notebooks": lambda: {"status": "done"}}, {"mode": "smoke"}, path, verbose=False)
        saved = json.loads(path.read_text())
        assert saved["ladder"]["rows"] == [2] and saved["finetune"]["status"].startswith("interrupted")
        assert "notebooks" not in saved, saved
    return "checked: a failing section leaves the others, an interrupted one the sections before it"


def check_wheel_plan() -> str:
    """The wheel plan's dry run on wheels made here: batches under the limit, and a wheel over it refused."""
    import contextlib
    import io

    sys.path.insert(0, str(Path(__file__).parent))
    import gpu_wheel_plan as plan

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "all"
        plan.example_wheel(folder, "trl", requires=("datasets",), payload=300_000)
        plan.example_wheel(folder, "datasets", payload=300_000)
        plan.example_wheel(folder, "transformers", payload=100_000)  # in the GPU image: skipped
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            ok = plan.main(["plan", str(folder), "--dry-run", "--limit-mb", "0.5"])
        assert ok == 0 and "2 batch(es) of at most 0 MB" in printed.getvalue(), printed.getvalue()
        plan.example_wheel(folder, "papermill", payload=600_000)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            refused = plan.main(["plan", str(folder), "--dry-run", "--limit-mb", "0.5"])
        assert refused == 1
    return "checked: the dry run batches under the limit, skips the image's packages and refuses a wheel over it"


# ------------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="smallest sizes on the CPU (what CI runs)")
    parser.add_argument("--only", action="append", choices=SECTIONS, default=[],
                        help="run this section only (repeatable; default: all, in the order ladder, finetune, notebooks)")
    parser.add_argument("--wheels", action="append", type=Path, default=[], metavar="DIR",
                        help="a folder of wheels from scripts/gpu_wheels.sh, or one holding its batch-NN folders")
    parser.add_argument("--target", type=Path, default=OUT / "site", help="where the wheels are installed")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results file (default build/gpu/results.json)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help=f"time limit of the whole run in seconds (default {GPU_BUDGET_S} on a GPU, none in --smoke)")
    parser.add_argument("--render-readme", action="store_true", help="only render results.json into README.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.worker_out.write_text(json.dumps(finetune_worker(json.loads(args.worker)), indent=2))
        return 0
    from course_utils.reporting import gpu_results

    if args.render_readme:
        changed = gpu_results.update_readme(results=gpu_results.load(args.results))
        print("README.md " + ("updated" if changed else "already up to date"))
        return 0
    mode = "smoke" if args.smoke else "gpu"
    budget = Budget(args.budget_s if args.budget_s is not None else (GPU_BUDGET_S if mode == "gpu" else None))
    install = install_wheels(args.wheels, args.target) if args.wheels else {"status": "no wheel folder given"}
    import torch

    if mode == "gpu" and not torch.cuda.is_available():
        print("No CUDA GPU here: run with --smoke to check the script on the CPU.", file=sys.stderr)
        return 2
    device = "cuda" if mode == "gpu" else "cpu"
    chosen = [name for name in SECTIONS if name in args.only] or list(SECTIONS)
    results: dict[str, Any] = {"mode": mode, "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                               "sections": chosen, "budget s": budget.seconds, "environment": environment(),
                               "install": install}
    write_results(results, args.results)
    from course_utils.course.hub_standins import build_standins

    models = sorted({m.format(finetune=FINETUNE_MODEL[mode]) for name in chosen for m in SECTION_MODELS[name]})
    if mode == "smoke":
        models = [FINETUNE_MODEL["smoke"]] if "finetune" in chosen else []
    hf_home = OUT / "hf_home"
    if models:
        print(f"[gpu-check] {mode}: building the stand-ins of {', '.join(models)} ...", flush=True)
        build_standins(hf_home, models=models, datasets=[], full_depth=mode == "gpu", verbose=False)

    def saving(name: str) -> Callable[[dict[str, Any]], None]:
        def save(part: dict[str, Any]) -> None:
            results[name] = part
            write_results(results, args.results)
        return save

    sections = {"ladder": lambda: ladder(mode, device, budget),
                "finetune": lambda: finetune(mode, device, hf_home, budget, saving("finetune")),
                "notebooks": lambda: notebooks(device, hf_home, budget, args.results.parent, saving("notebooks"))}
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # `timeout` sends SIGTERM: keep what was measured
    try:
        run_sections({name: sections[name] for name in chosen}, results, args.results)
    except KeyboardInterrupt:
        print(f"[gpu-check] stopped; what was measured is in {args.results}", file=sys.stderr)
        return 130
    if mode == "smoke":
        results["smoke checks"] = {"partial write": check_partial_write(), "wheel plan": check_wheel_plan()}
    results["seconds"] = round(time.perf_counter() - budget.started, 1)
    write_results(results, args.results)
    if mode == "gpu" and args.results == RESULTS:
        gpu_results.update_readme(results=results)
    failed = failed_parts(results)
    print(f"[gpu-check] wrote {args.results} in {results['seconds']:.0f} s"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def failed_parts(results: dict[str, Any]) -> list[str]:
    """Every section, run and notebook of ``results`` whose status says it failed."""
    failed = [name for name in SECTIONS if str(results.get(name, {}).get("status", "")).startswith("failed")]
    part = results.get("finetune", {})
    for key in ("lora_vs_qlora", "t4_shaped", "unsloth_vs_peft"):
        failed += [row["run"] for row in part.get(key, {}).get("rows", []) if row["status"].startswith("failed")]
    failed += [row["notebook"] for row in results.get("notebooks", {}).get("rows", [])
               if row["status"].startswith("failed")]
    return failed


if __name__ == "__main__":
    sys.exit(main())
