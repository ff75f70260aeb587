"""The GPU measurements in one command (``make gpu-check``): the paths no CPU run can show, on one CUDA GPU.

    python scripts/gpu_check.py                       # on a CUDA machine: measure, write build/gpu/results.json
    python scripts/gpu_check.py --wheels W1 --wheels W2   # first install the wheels of scripts/gpu_wheels.sh
    python scripts/gpu_check.py --smoke               # every measurement at its smallest size on the CPU (CI)
    python scripts/gpu_check.py --render-readme       # put build/gpu/results.json's figures into README.md

It measures, with no network (models and data are the hub stand-ins of course_utils.course.hub_standins, at full depth):

1. the speed ladder of notebook 03 at GPT-2 124M size (fp32, TF32, fused AdamW, 16-bit autocast, SDPA,
   torch.compile, ...), tokens/s and peak memory per row, beside the lecture's A100 table;
2. LoRA against QLoRA (NF4 + double quantization, bitsandbytes) on the same model, data, steps and seed: seconds
   per step, peak memory, held-out loss;
3. Unsloth against transformers + PEFT on the same model, data and steps (where Unsloth cannot be imported, the
   exact error is the result), beside Unsloth's published claims;
4. notebooks 05 and 06 on PROFILE="colab" on the GPU.

Each fine-tuning run is a fresh process (so one library's patches cannot touch another's numbers). Everything
lands in build/gpu/results.json (GPU, driver, CUDA, library versions, every figure) and build/gpu/executed/.
On a CPU (``--smoke``) rows that need CUDA say "not run: no CUDA GPU".
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

OUT = ROOT / "build" / "gpu"
NO_CUDA = "not run: no CUDA GPU"
PACKAGES = ("transformers", "peft", "trl", "accelerate", "bitsandbytes", "datasets", "unsloth", "unsloth_zoo",
            "xformers", "triton")
# The fine-tuning comparison's model: notebook 05's (colab "finetune" role); the smoke run's is the smallest stand-in.
FINETUNE_MODEL = {"gpu": "Qwen/Qwen2.5-0.5B", "smoke": "HuggingFaceTB/SmolLM2-135M"}
SIZES = {  # (ladder batch, ladder length, ladder steps, fine-tuning steps, batch) per mode
    "gpu": {"ladder_batch": 8, "ladder_len": 1024, "ladder_steps": 10, "ft_steps": 30, "ft_batch": 16},
    "smoke": {"ladder_batch": 1, "ladder_len": 32, "ladder_steps": 1, "ft_steps": 2, "ft_batch": 2},
}
# Notebooks 05 and 06 on the GPU: fewer steps than Colab's 300 so that the whole check fits in minutes.
NOTEBOOK_PARAMETERS = {"05": {"TRAIN_STEPS": 60, "TEST_EXAMPLES": 64}, "06": {"TRAIN_STEPS": 60, "TEST_EXAMPLES": 64}}


# ------------------------------------------------------------------------------------------------ installing
def install_wheels(folders: list[Path], target: Path) -> dict[str, Any]:
    """Install every wheel of ``folders`` (no index, no dependency resolution) into one ``target`` on sys.path.

    The folders are what scripts/gpu_wheels.sh downloaded, possibly in several batches; torch is never among
    them, so the machine's own torch stays. When the set fails to install, it is installed again without Unsloth
    and the reason is recorded.
    """
    wheels = sorted(str(wheel) for folder in folders for wheel in Path(folder).glob("*.whl"))
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
    return env


# --------------------------------------------------------------------------------------------------- ladder
def ladder(mode: str, device: str) -> dict[str, Any]:
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
    rows = speed.run_ladder(cfg, size["ladder_batch"], size["ladder_len"], device=device, steps=size["ladder_steps"],
                            warmup=2 if mode == "gpu" else 1, progress=False)
    notes = speed.ladder_table(rows)
    return {"model": gpt.config_dict(cfg), "parameters": gpt.GPT(cfg).num_parameters(), "batch": size["ladder_batch"],
            "seq_len": size["ladder_len"], "steps": size["ladder_steps"], "environment": speed.environment_line(device),
            "rows": [{"name": r.name, "tokens_per_second": r.tokens_per_second, "peak_memory_mib": r.peak_memory_mib,
                      "speedup": r.speedup, "kept": r.kept, "skipped": r.skipped, "note": note["note"]}
                     for r, note in zip(rows, notes)],
            "lecture": speed.lecture_ladder_table()}


# ---------------------------------------------------------------------------------------------- fine-tuning
def finetune_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One fine-tuning run (in its own process): notebook 06's loading and TRL training, then the held-out loss.

    The model is loaded and adapted by ``finetune_launch.load_for_training`` (Unsloth's two calls on its path,
    transformers + PEFT on the other), as ``scripts/finetune.py`` does; TRL's ``SFTTrainer`` trains it and scores the
    validation split.
    """
    if spec["backend"] == "unsloth":
        try:
            import unsloth  # noqa: F401 - first, before transformers, as Unsloth requires; its error is the result
        except Exception as exc:  # noqa: BLE001 - why it cannot be imported is what gets recorded
            return {"status": f"not run: importing unsloth failed: {type(exc).__name__}: {exc}"}
    import tempfile

    import torch
    from transformers import set_seed

    from course_utils.finetuning import finetune_launch, sft_data, trainer_callbacks
    from course_utils.ground import machine, sources

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
    with tempfile.TemporaryDirectory() as scratch:
        config = SFTConfig(output_dir=scratch, **no_checkpointing, max_steps=steps, per_device_train_batch_size=batch,
                           per_device_eval_batch_size=batch, learning_rate=5e-4, warmup_steps=min(10, steps // 2),
                           logging_steps=max(1, steps // 10), seed=seed, completion_only_loss=True, max_length=256,
                           bf16=precision.autocast_dtype == torch.bfloat16,
                           fp16=precision.autocast_dtype == torch.float16, use_cpu=device.type == "cpu",
                           report_to="none", save_strategy="no", disable_tqdm=True)
        meter = trainer_callbacks.TrainingMeter()
        trainer = SFTTrainer(model=model, args=config, processing_class=tokenizer, callbacks=[meter],
                             train_dataset=sft_data.sft_rows(data["train"], chat=True),
                             eval_dataset=sft_data.sft_rows(data["validation"], chat=True))
        if use_unsloth:
            from unsloth.chat_templates import train_on_responses_only

            from course_utils.finetuning.unsloth_backend import chat_markers

            instruction_part, response_part = chat_markers(tokenizer)
            trainer = train_on_responses_only(trainer, instruction_part=instruction_part, response_part=response_part)
        trainer.train()
        held_out = trainer.evaluate()["eval_loss"]
    base = "4-bit NF4" if spec["load_in_4bit"] else str(precision.inference_dtype).replace("torch.", "")
    peak = meter.peak
    return {"status": f"measured on {spec['device']}, base in {base}", "backend": why,
            "seconds per step": meter.seconds_per_step, "peak MiB": peak.peak_bytes / 2**20 if peak else None,
            "peak measured as": peak.method if peak else None, "held-out loss": held_out,
            "trainable parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def run_worker(spec: dict[str, Any], hf_home: Path) -> dict[str, Any]:
    """:func:`finetune_worker` in a fresh Python process, offline, on the stand-ins in ``hf_home``."""
    out = OUT / "runs" / f"{spec['run'].replace(' ', '_').replace(',', '')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec), "--worker-out", str(out)],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        return {"run": spec["run"], "status": "failed: " + _last_line(done.stderr)}
    return {"run": spec["run"], **json.loads(out.read_text())}


def finetune_comparisons(mode: str, device: str, hf_home: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """LoRA against QLoRA, and Unsloth against PEFT (QLoRA both), on the same model, data, steps and seed."""
    from course_utils.finetuning import unsloth_backend

    size, model = SIZES[mode], FINETUNE_MODEL[mode]
    common = {"model": model, "steps": size["ft_steps"], "batch": size["ft_batch"], "seed": 0, "device": device}
    lora = run_worker({**common, "run": "LoRA, unquantized base", "backend": "peft", "load_in_4bit": False}, hf_home)
    qlora = run_worker({**common, "run": "QLoRA, NF4 + double quantization", "backend": "peft", "load_in_4bit": True},
                       hf_home)
    if device == "cpu":
        qlora["status"] += " (bitsandbytes' CPU kernel: the CUDA kernel was not run)"
    meta = {key: common[key] for key in ("model", "steps", "batch", "seed")}
    lora_vs_qlora = {**meta, "rows": [lora, qlora]}
    peft_row = {**qlora, "run": "transformers + PEFT (the QLoRA run above)"}
    if device != "cuda":
        installed = "installed" if unsloth_backend.unsloth_installed() else "not installed"
        fast = {"run": "Unsloth", "status": f"{NO_CUDA} (unsloth {installed} here)"}
    else:
        fast = run_worker({**common, "run": "Unsloth", "backend": "unsloth", "load_in_4bit": True}, hf_home)
    claims = unsloth_backend.PUBLISHED_CLAIMS
    measured = "seconds per step" in fast and "seconds per step" in peft_row
    verdicts = [f"Unsloth claims {claims['speed']} and {claims['memory']} than {claims['against']} (its README)."]
    if measured:
        speedup = peft_row["seconds per step"] / fast["seconds per step"]
        saved = 1 - fast["peak MiB"] / peft_row["peak MiB"] if peft_row.get("peak MiB") else float("nan")
        verdicts.append(f"Measured here: {speedup:.2f}x the steps per second, {saved:.0%} less peak memory.")
    else:
        verdicts.append("Measured here: nothing to compare (" + fast["status"] + ").")
    return lora_vs_qlora, {**meta, "rows": [fast, peft_row], "claims": verdicts}


# ------------------------------------------------------------------------------------------------ notebooks
def notebooks(device: str, hf_home: Path) -> list[dict[str, Any]]:
    """Notebooks 05 and 06 on PROFILE="colab" on the GPU, offline, on the stand-ins."""
    from course_utils.course.release import solution_notebooks
    from course_utils.course.runner import environ, run_notebook

    chosen = [nb for nb in solution_notebooks() if nb.name[:2] in NOTEBOOK_PARAMETERS]
    if device != "cuda":
        return [{"notebook": nb.name, "status": f"{NO_CUDA} (make test-colab runs it on the CPU)"} for nb in chosen]
    rows = []
    with environ({"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}):
        for nb in chosen:
            result = run_notebook(nb, profile="colab", output=OUT / "executed" / nb.name,
                                  figures_file=OUT / "figures" / f"{nb.stem}.json", cell_timeout=600,
                                  parameters={"PROFILE": "colab", **NOTEBOOK_PARAMETERS[nb.name[:2]]})
            rows.append({"notebook": nb.name, "status": result.status if result.ok else
                         f"failed at {result.failed_cell}: {result.error}", "seconds": result.seconds,
                         "parameters": NOTEBOOK_PARAMETERS[nb.name[:2]], "figures": result.figures})
    return rows


# ------------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="smallest sizes on the CPU (what CI runs)")
    parser.add_argument("--wheels", action="append", type=Path, default=[], metavar="DIR",
                        help="a folder of wheels from scripts/gpu_wheels.sh (repeatable: batches)")
    parser.add_argument("--target", type=Path, default=OUT / "site", help="where the wheels are installed")
    parser.add_argument("--render-readme", action="store_true", help="only render results.json into README.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.worker_out.write_text(json.dumps(finetune_worker(json.loads(args.worker)), indent=2))
        return 0
    from course_utils.reporting import gpu_results

    if args.render_readme:
        changed = gpu_results.update_readme(results=gpu_results.load())
        print("README.md " + ("updated" if changed else "already up to date"))
        return 0
    started = time.perf_counter()
    install = install_wheels(args.wheels, args.target) if args.wheels else {"status": "no wheel folder given"}
    import torch

    mode = "smoke" if args.smoke else "gpu"
    if mode == "gpu" and not torch.cuda.is_available():
        print("No CUDA GPU here: run with --smoke to check the script on the CPU.", file=sys.stderr)
        return 2
    device = "cuda" if mode == "gpu" else "cpu"
    from course_utils.course.hub_standins import build_standins

    hf_home = OUT / "hf_home"
    print(f"[gpu-check] {mode}: building the stand-ins ({'all layers' if mode == 'gpu' else 'cut'}) ...", flush=True)
    smoke_only = {"models": [FINETUNE_MODEL["smoke"]], "datasets": []} if mode == "smoke" else {}
    build_standins(hf_home, full_depth=mode == "gpu", verbose=False, **smoke_only)
    results: dict[str, Any] = {"mode": mode, "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                               "environment": environment(), "install": install}
    print("[gpu-check] speed ladder ...", flush=True)
    results["ladder"] = ladder(mode, device)
    print("[gpu-check] LoRA, QLoRA, Unsloth, PEFT ...", flush=True)
    results["lora_vs_qlora"], results["unsloth_vs_peft"] = finetune_comparisons(mode, device, hf_home)
    print("[gpu-check] notebooks 05 and 06 ...", flush=True)
    results["notebooks"] = notebooks(device, hf_home)
    results["seconds"] = round(time.perf_counter() - started, 1)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    if mode == "gpu":
        gpu_results.update_readme(results=results)
    failed = [row["run"] for part in ("lora_vs_qlora", "unsloth_vs_peft") for row in results[part]["rows"]
              if row["status"].startswith("failed")] + \
             [row["notebook"] for row in results["notebooks"] if row["status"].startswith("failed")]
    print(f"[gpu-check] wrote {(OUT / 'results.json').relative_to(ROOT)} in {results['seconds']:.0f} s"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
