"""The notebook's fine-tuning as a script for one process or many (``accelerate launch``, ``torchrun``, Slurm).

``scripts/finetune.py`` calls :func:`main`, which makes the same library calls as notebook 06: Unsloth's
``FastLanguageModel`` on a CUDA GPU where unsloth is installed, transformers + bitsandbytes + PEFT elsewhere (and
always with ``--device cpu``), then TRL's ``SFTTrainer``. Launched as several processes, each one (a *rank*) loads the model,
trains on its own share of every batch, and the ``Trainer`` averages the gradients across ranks before each
optimizer step (DDP), so every rank holds the same adapters at every step. At the end each rank fingerprints its
adapters; rank 0 checks that all fingerprints agree, saves the adapter once and writes a JSON report::

    python scripts/finetune.py --profile tiny --max-steps 20
    accelerate launch --multi_gpu --num_processes 2 scripts/finetune.py --profile tiny --max-steps 4  # CPU: gloo
    accelerate launch --config_file cluster/accelerate_ddp.yaml scripts/finetune.py --profile cluster

:func:`launch_command` and :func:`run_script` build and run those commands for the notebook and the tests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from course_utils.ground import paths

SCRIPT = paths.REPO_ROOT / "scripts" / "finetune.py"
CLUSTER_DIR = paths.REPO_ROOT / "cluster"
BACKEND_CHOICES = ("auto", "peft", "unsloth")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The script's command line (every default ``None`` means "the profile's value")."""
    parser = argparse.ArgumentParser(description="LoRA/QLoRA fine-tuning on the instruction data of a profile.")
    parser.add_argument("--profile", default="tiny", help="tiny (CPU, data/), colab or cluster")
    parser.add_argument("--model", default=None, help="model name or folder (default: the profile's 'base')")
    parser.add_argument("--backend", default="auto", choices=BACKEND_CHOICES)
    parser.add_argument("--load-in-4bit", default=None, action=argparse.BooleanOptionalAction,
                        help="QLoRA: the frozen base in 4-bit NF4 (default: off on tiny, on elsewhere)")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="per process (rank)")
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=float, default=32)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--chat", default=None, action=argparse.BooleanOptionalAction,
                        help="format examples with the chat template (default: off on tiny, on elsewhere)")
    parser.add_argument("--device", default=None, choices=("cpu", "cuda"),
                        help="default: one GPU per rank where there are GPUs, else CPU processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default=None, help="where the adapter and report.json go")
    parser.add_argument("--check-access", action="store_true",
                        help="only check that the model can be downloaded (token, gated licence), then exit")
    return parser.parse_args(argv)


def world() -> tuple[int, int, int]:
    """``(rank, local rank, world size)`` from the variables accelerate and torchrun set (0, 0, 1 when alone)."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)))


def fingerprint(model: Any) -> str:
    """A short hash of every trainable tensor's bytes: equal on two ranks only if their adapters are identical."""
    digest = hashlib.sha256()
    for name, parameter in sorted(model.named_parameters()):
        if parameter.requires_grad:
            digest.update(name.encode())
            digest.update(parameter.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _gather(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order (``[value]`` when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def load_for_training(args: argparse.Namespace, location: str, device: Any, load_in_4bit: bool,
                      use_unsloth: bool, max_seq_length: int = 256) -> tuple[Any, Any]:
    """``(model with LoRA adapters, tokenizer)``: Unsloth's two calls on its path, transformers + PEFT on the other."""
    import torch

    from course_utils.finetuning import lora, quant
    from course_utils.ground import machine

    if use_unsloth:
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=location, max_seq_length=max_seq_length, dtype=None, load_in_4bit=load_in_4bit,
            device_map={"": device.index or 0})  # this rank's own GPU, never Unsloth's guess
        model = FastLanguageModel.get_peft_model(
            model, r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0, bias="none",
            target_modules=list(lora.LLAMA_TARGETS), random_state=args.seed,
            use_gradient_checkpointing="unsloth" if args.gradient_checkpointing else False)
        return model, tokenizer
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = machine.pick_precision(device).inference_dtype
    extra = {"device_map": {"": device.index or 0}} if device.type == "cuda" else {}
    if load_in_4bit and not quant.saved_quantized(location):  # a folder saved quantized brings its own config
        extra["quantization_config"] = quant.nf4_config(dtype)
    model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, **extra)
    if device.type != "cuda" and not load_in_4bit:
        model = model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(location)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.model_max_length = min(tokenizer.model_max_length, max_seq_length)
    if load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)
    elif args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    torch.manual_seed(args.seed)
    config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0,
                        target_modules=list(lora.LLAMA_TARGETS), task_type="CAUSAL_LM")
    return get_peft_model(model, config), tokenizer


def access_problems(args: argparse.Namespace) -> list[str]:
    """Why the model of ``args`` cannot be loaded here (an empty list when it can), asked once before any rank starts.

    Embedded models, local folders and cached snapshots need nothing; a hub id is checked with the token this
    machine has (:func:`course_utils.ground.hub.access_problem`): the cluster profile's Llama models are gated.
    """
    from course_utils.ground import hub, profiles, sources

    name = args.model or profiles.resolve_profile(args.profile, verbose=False).model("base")
    try:
        source = sources.resolve_model(name)
    except sources.SourceNotFoundError as exc:
        return [str(exc)]
    problem = hub.access_problem(source.location) if source.origin == "hub" else None
    return [problem] if problem else []


def require_access(args: argparse.Namespace, rank: int = 0) -> None:
    """Exit with one clear message (rank 0 prints it, the other ranks exit quietly) if the model is out of reach."""
    problems = access_problems(args)
    if problems:
        raise SystemExit("Cannot fine-tune: " + " ".join(problems) if rank == 0 else 1)


def choose_backend(backend: str, device: str | None) -> tuple[bool, str]:
    """``(use Unsloth?, why)``: Unsloth only on a CUDA device; ``--device cpu`` always means the CPU and PEFT."""
    import torch

    from course_utils.finetuning import unsloth_backend

    on_gpu = device == "cuda" or (device is None and torch.cuda.is_available())
    if backend == "peft":
        return False, "asked for transformers + PEFT"
    if backend == "unsloth":
        unsloth_backend.require_cuda("cuda" if on_gpu else "cpu")
        status = unsloth_backend.activate("cuda")
        if not status.available:
            raise RuntimeError(f"--backend unsloth: {status.reason}")
        return True, status.reason
    if not on_gpu:
        return False, "the device is the CPU: transformers + PEFT"
    status = unsloth_backend.activate("cuda")
    return status.available, status.reason


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Fine-tune as the command line says; rank 0 saves the adapter and ``report.json``. Returns the report."""
    args = parse_args(argv)
    rank, local_rank, world_size = world()
    require_access(args, rank)  # before anything loads: one message, not a gated-repository traceback per rank
    if args.check_access:
        print(f"{args.model or args.profile + ' profile'}: the model can be loaded here.")
        return {"access": "ok"}
    use_unsloth, why = choose_backend(args.backend, args.device)  # imports unsloth first where it is used

    import torch
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from course_utils.finetuning import sft_data, trainer_callbacks
    from course_utils.ground import machine, profiles, sources

    profile = profiles.resolve_profile(args.profile, verbose=rank == 0)
    model_name = args.model or profile.model("base")
    load_in_4bit = args.load_in_4bit if args.load_in_4bit is not None else not profile.is_tiny
    chat = args.chat if args.chat is not None else not profile.is_tiny
    steps = args.max_steps or profile.pick(tiny=150, colab=300, cluster=1000)
    batch_size = args.batch_size or profile.pick(tiny=16, colab=16, cluster=16)
    learning_rate = args.learning_rate or profile.pick(tiny=5e-3, colab=5e-4, cluster=2e-4)
    output_dir = Path(args.output_dir) if args.output_dir else paths.work_dir("finetune_script")
    on_gpu = args.device == "cuda" or (args.device is None and torch.cuda.is_available())
    device = torch.device("cuda", local_rank) if on_gpu else torch.device("cpu")
    set_seed(args.seed)

    location = sources.resolve_model(model_name).location
    model, tokenizer = load_for_training(args, location, device, load_in_4bit, use_unsloth)
    rows = sft_data.sft_rows(sources.load_text_dataset(profile.dataset("instructions"), "train"), chat=chat)
    precision = machine.pick_precision(device)
    config = SFTConfig(
        output_dir=str(output_dir / "trainer"), max_steps=steps, per_device_train_batch_size=batch_size,
        learning_rate=learning_rate, warmup_steps=min(10, steps // 2), logging_steps=max(1, steps // 10),
        seed=args.seed, completion_only_loss=True, max_length=256, **sft_data.checkpointing_option(False),
        bf16=precision.autocast_dtype == torch.bfloat16, fp16=precision.autocast_dtype == torch.float16,
        use_cpu=device.type == "cpu", report_to="none", save_strategy="no", disable_tqdm=rank != 0,
        ddp_find_unused_parameters=False)
    meter = trainer_callbacks.TrainingMeter()
    trainer = SFTTrainer(model=model, args=config, train_dataset=rows, processing_class=tokenizer, callbacks=[meter])
    if use_unsloth and chat:
        from unsloth.chat_templates import train_on_responses_only

        from course_utils.finetuning.unsloth_backend import chat_markers

        instruction_part, response_part = chat_markers(tokenizer)
        trainer = train_on_responses_only(trainer, instruction_part=instruction_part, response_part=response_part)
    trainer.train()

    losses = trainer_callbacks.losses(trainer.state.log_history)
    mine = {"rank": rank, "fingerprint": fingerprint(model), "steps": meter.steps,
            "final loss": losses[max(losses)] if losses else float("nan"),
            "seconds per step": meter.seconds_per_step,
            "peak bytes": meter.peak.peak_bytes if meter.peak else None,
            "peak above start bytes": meter.peak.increase_bytes if meter.peak else None}
    ranks = _gather(mine)
    report = {"backend": "unsloth" if use_unsloth else "peft", "backend reason": why, "model": model_name,
              "profile": profile.name, "load_in_4bit": load_in_4bit, "device": device.type,
              "world_size": world_size, "steps": meter.steps, "batch per rank": batch_size,
              "global batch": batch_size * world_size, "seconds per step": meter.seconds_per_step,
              "first step seconds": meter.first_step_seconds,
              "peak method": meter.peak.method if meter.peak else None,
              "peak bytes": mine["peak bytes"], "peak above start bytes": mine["peak above start bytes"],
              "ranks": ranks, "ranks agree": len({r["fingerprint"] for r in ranks}) == 1,
              "adapter": str(output_dir / "adapter")}
    if rank == 0:
        model.save_pretrained(output_dir / "adapter")
        tokenizer.save_pretrained(output_dir / "adapter")
        (output_dir / "report.json").write_text(json.dumps(report, indent=2))
        print(f"{world_size} rank(s), {meter.steps} steps, {meter.seconds_per_step:.3f} s per step; "
              f"adapters identical on every rank: {report['ranks agree']}; saved {output_dir / 'adapter'}")
    return report


# ================================================================================================ launching
def launch_command(*script_args: str, num_processes: int = 2, config_file: str | None = None,
                   launcher: str = "accelerate") -> list[str]:
    """The command that starts ``scripts/finetune.py`` on ``num_processes`` ranks (``accelerate`` or ``torchrun``).

    ``accelerate launch --multi_gpu`` starts the ranks through torchrun; on a machine without a GPU the ranks run
    on CPU processes and talk through gloo. (accelerate's ``--cpu`` mode starts several processes only through
    MPI's ``mpirun``.)
    """
    if num_processes == 1:
        return [sys.executable, str(SCRIPT), *script_args]
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={num_processes}",
                str(SCRIPT), *script_args]
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if config_file:
        command += ["--config_file", config_file]
    else:
        command += ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--num_processes", str(num_processes)]
    return [*command, str(SCRIPT), *script_args]


@dataclass(frozen=True)
class LaunchResult:
    """A finished run of the script: its report, how long it took, and the last lines it printed."""

    report: dict[str, Any] | None
    seconds: float
    returncode: int
    tail: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.report is not None


def run_script(output_dir: str | Path, *script_args: str, num_processes: int = 1, launcher: str = "accelerate",
               timeout: float = 600) -> LaunchResult:
    """Run the script (``num_processes`` ranks) writing to ``output_dir``; its report.json, or the error's tail."""
    problems = access_problems(parse_args(list(script_args)))
    if problems:  # checked here once, so that no rank starts only to fail on the same gated repository
        return LaunchResult(None, 0.0, 1, "Cannot fine-tune: " + " ".join(problems))
    output_dir = Path(output_dir)
    if output_dir.exists():
        shutil.rmtree(output_dir)
    command = launch_command(*script_args, "--output-dir", str(output_dir), num_processes=num_processes,
                             launcher=launcher)
    environment = dict(os.environ, TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error",
                       PYTHONPATH=os.pathsep.join(filter(None, [str(paths.REPO_ROOT), os.environ.get("PYTHONPATH")])),
                       OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1" if num_processes > 1 else ""))
    if not environment["OMP_NUM_THREADS"]:
        del environment["OMP_NUM_THREADS"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment,
                          cwd=paths.REPO_ROOT)
    seconds = time.perf_counter() - start
    report_file = output_dir / "report.json"
    report = json.loads(report_file.read_text()) if report_file.exists() else None
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
    return LaunchResult(report, seconds, done.returncode, tail)


def show_command(command: list[str]) -> str:
    """A command as you would type it (the Python executable and the repository path shortened)."""
    shown = []
    for part in command:
        if part == sys.executable:
            part = "python"
        part = part.replace(str(paths.REPO_ROOT) + os.sep, "")
        shown.append(part)
    if shown[:3] == ["python", "-m", "accelerate.commands.launch"]:
        shown = ["accelerate", "launch", *shown[3:]]
    if shown[:3] == ["python", "-m", "torch.distributed.run"]:
        shown = ["torchrun", *shown[3:]]
    return " ".join(shown)


def cluster_files() -> dict[str, str]:
    """The example launch configurations in ``cluster/`` that belong to fine-tuning, with their text."""
    names = ("accelerate_ddp.yaml", "accelerate_fsdp.yaml", "accelerate_deepspeed_zero2.yaml", "finetune.slurm")
    return {name: (CLUSTER_DIR / name).read_text() for name in names if (CLUSTER_DIR / name).exists()}


# ================================================================================================ Unsloth vs PEFT
def compare_backends(main_backend: str, meter: Any, output_dir: str | Path, script_args: list[str], *,
                     measure_others: bool = True) -> list[dict[str, Any]]:
    """Unsloth and PEFT on the same model, data and steps: seconds per step and peak memory of each.

    The backend the notebook trained with gives its own row (from its :class:`TrainingMeter`); the other is
    trained by ``scripts/finetune.py`` in a fresh process (so Unsloth's patches, once imported, cannot speed up or
    slow down the PEFT run), or, where it cannot run, its row says so and why. No number is filled in that was not
    measured.
    """
    from course_utils.finetuning import unsloth_backend

    rows = []
    for backend in ("unsloth", "peft"):
        row: dict[str, Any] = {"backend": {"unsloth": "Unsloth", "peft": "transformers + PEFT"}[backend]}
        if backend == main_backend:
            peak = meter.peak
            row.update({"measured": "in this notebook (section 1)", "s per step": meter.seconds_per_step,
                        "peak above start MiB": peak.increase_bytes / 2**20 if peak else float("nan"),
                        "peak measured as": peak.method if peak else "-"})
            rows.append(row)
            continue
        why = unsloth_backend.why_not_here("cuda") if backend == "unsloth" else None
        if why is not None or not measure_others:
            row.update({"measured": "NOT measured: " + (why or "COMPARE_BACKENDS is False"),
                        "s per step": float("nan"), "peak above start MiB": float("nan"), "peak measured as": "-"})
        else:
            done = run_script(Path(output_dir) / backend, *script_args, "--backend", backend)
            if not done.ok:
                raise RuntimeError(f"the {backend} run failed:\n{done.tail}")
            report = done.report
            row.update({"measured": "scripts/finetune.py in a fresh process", "s per step": report["seconds per step"],
                        "peak above start MiB": (report["peak above start bytes"] or 0) / 2**20,
                        "peak measured as": report["peak method"]})
        rows.append(row)
    return rows


def claims_table(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Unsloth's published claims beside the ratios measured here (or a plain 'not measured')."""
    from course_utils.finetuning import unsloth_backend

    claims = unsloth_backend.PUBLISHED_CLAIMS
    by = {row["backend"]: row for row in rows}
    fast, plain = by["Unsloth"], by["transformers + PEFT"]
    measured = fast["s per step"] == fast["s per step"] and plain["s per step"] == plain["s per step"]  # not NaN
    speed = (f"{plain['s per step'] / fast['s per step']:.2f}x faster per step" if measured else "not measured here")
    memory = (f"{1 - fast['peak above start MiB'] / plain['peak above start MiB']:.0%} less peak memory"
              if measured and plain["peak above start MiB"] else "not measured here")
    return [{"Unsloth claims (its README)": f"{claims['speed']} than {claims['against']}", "measured here": speed},
            {"Unsloth claims (its README)": f"{claims['memory']} than {claims['against']}", "measured here": memory}]
