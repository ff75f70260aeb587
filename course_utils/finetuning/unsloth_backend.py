"""Where Unsloth runs, importing it first, and what it would do where it does not.

Unsloth (``pip install unsloth``, the workbook's ``gpu`` extra) rewrites the attention, RoPE, RMSNorm, MLP and
cross-entropy of supported models as Triton kernels, adds its own gradient checkpointing that offloads activations
to CPU memory, and loads pre-quantized 4-bit checkpoints. Its notebooks follow one rhythm, which notebook 06 runs on a
CUDA GPU::

    from unsloth import FastLanguageModel            # first, before transformers, peft and trl
    model, tokenizer = FastLanguageModel.from_pretrained(name, max_seq_length=..., dtype=None, load_in_4bit=True)
    model = FastLanguageModel.get_peft_model(model, r=16, target_modules=[...], lora_alpha=16,
                                             use_gradient_checkpointing="unsloth")
    trainer = SFTTrainer(model=model, args=SFTConfig(...), train_dataset=...)   # TRL
    trainer = train_on_responses_only(trainer, instruction_part=..., response_part=...)
    trainer.train()
    FastLanguageModel.for_inference(model)
    model.save_pretrained_merged(folder, tokenizer, save_method="merged_16bit")
    model.save_pretrained_gguf(folder, tokenizer, quantization_method="q8_0")

The workbook takes that path only on a CUDA GPU with unsloth installed (:func:`activate`); everywhere else the same
cells run transformers + PEFT + TRL. (Recent Unsloth releases also have CPU and Apple-silicon paths; the workbook does
not use or test them.) Importing unsloth patches transformers, PEFT and TRL, so it must come before them; nothing
here imports it except :func:`activate`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# Unsloth's published claims (its README), to set beside what a run measures; never measured on the CPU.
PUBLISHED_CLAIMS = {"speed": "about 2x faster", "memory": "up to 70% less memory",
                    "against": "Hugging Face transformers + Flash Attention 2"}
# Modules whose import before unsloth's means some of its patches may not apply (unsloth warns about these).
PATCHED_LIBRARIES = ("transformers", "peft", "trl")


def unsloth_installed() -> bool:
    """Whether the unsloth package is installed (found without importing it)."""
    return importlib.util.find_spec("unsloth") is not None


def why_not_here(device: torch.device | str | None) -> str | None:
    """None when the Unsloth path can run on ``device`` (a CUDA GPU, unsloth installed), else the reason."""
    device = torch.device(device) if device is not None else None
    if device is not None and device.type != "cuda":
        return (f"the device is {device.type!r}: the workbook runs Unsloth only on a CUDA GPU (its Triton kernels); "
                "choose a CUDA device to use it")
    if not torch.cuda.is_available():
        return "no CUDA GPU here: the workbook runs Unsloth's Triton kernels only on a CUDA GPU"
    if not unsloth_installed():
        return "unsloth is not installed (install the workbook's gpu extra: pip install -e '.[gpu]')"
    return None


def require_cuda(device: torch.device | str) -> None:
    """Raise a clear error unless ``device`` is a CUDA device (the Unsloth path's only one)."""
    if torch.device(device).type != "cuda":
        raise ValueError(f"The Unsloth backend runs on a CUDA GPU, not on {torch.device(device).type!r}. Use "
                         "--device cuda on a machine with an NVIDIA GPU, or --backend peft for this device.")


@dataclass(frozen=True)
class UnslothStatus:
    """What :func:`activate` found: whether the Unsloth path runs, why (not), and what was imported before it."""

    available: bool
    reason: str
    imported_before: tuple[str, ...]  # libraries unsloth would patch that were imported before it

    def __str__(self) -> str:
        if self.available:
            late = (f" (imported after {', '.join(self.imported_before)}: restart the runtime and run this cell "
                    "before anything imports them, or some patches are missing)") if self.imported_before else ""
            return f"Unsloth path: {self.reason}{late}. The cells below run Unsloth's calls."
        return f"Unsloth NOT used: {self.reason}. The cells below run the transformers + PEFT + TRL calls instead."

    def instead(self, unsloth_does: str) -> None:
        """Print, on the PEFT path, what the Unsloth branch of a cell would have done."""
        if not self.available:
            print(f"Unsloth path not taken here ({self.reason.split(':')[0]}); it would: {unsloth_does}.")


def activate(device: torch.device | str | None = None) -> UnslothStatus:
    """Import unsloth first where the Unsloth path can run on ``device``; say whether it does, and why."""
    before = tuple(name for name in PATCHED_LIBRARIES if name in sys.modules)
    reason = why_not_here(device)
    if reason is not None:
        return UnslothStatus(False, reason, ())
    try:
        import unsloth  # noqa: F401 - the import is the point: it applies unsloth's patches
    except Exception as exc:  # noqa: BLE001 - any failure to import means "not available", with the reason
        return UnslothStatus(False, f"importing unsloth failed: {type(exc).__name__}: {str(exc)[:200]}", ())
    return UnslothStatus(True, f"unsloth {_version('unsloth')} on {torch.cuda.get_device_name(0)}", before)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions() -> list[dict[str, str]]:
    """The versions that matter for this notebook, and the GPU (read from package metadata: imports nothing)."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU"
    rows = [{"package": "torch", "version": torch.__version__},
            {"package": "CUDA (torch build)", "version": str(torch.version.cuda)},
            {"package": "GPU", "version": gpu}]
    for name in ("unsloth", "unsloth_zoo", "xformers", "triton", "transformers", "peft", "trl", "bitsandbytes",
                 "accelerate", "gguf", "llama_cpp_python"):
        rows.append({"package": name, "version": _version(name)})
    return rows


def unsloth_save_calls(folder: str, repo_id: str = "<you>/<model>") -> list[dict[str, str]]:
    """Unsloth's one-line savers, each beside what it writes (the notebook runs the first three on its path)."""
    return [
        {"format": "LoRA adapter", "Unsloth call": f'model.save_pretrained("{folder}/lora")',
         "writes": "adapter_model.safetensors + adapter_config.json (PEFT's format)"},
        {"format": "merged 16-bit", "Unsloth call":
            f'model.save_pretrained_merged("{folder}/merged", tokenizer, save_method="merged_16bit")',
         "writes": "a standalone 16-bit checkpoint: the adapters merged into the base's 16-bit weights"},
        {"format": "GGUF", "Unsloth call":
            f'model.save_pretrained_gguf("{folder}/gguf", tokenizer, quantization_method="q8_0")',
         "writes": "merges, converts with llama.cpp's converter and quantizes (builds llama.cpp the first time)"},
        {"format": "Hub: merged", "Unsloth call":
            f'model.push_to_hub_merged("{repo_id}", tokenizer, save_method="merged_16bit", token=...)',
         "writes": "the merged checkpoint, uploaded"},
        {"format": "Hub: GGUF", "Unsloth call":
            f'model.push_to_hub_gguf("{repo_id}", tokenizer, quantization_method=["q4_k_m", "q8_0"], token=...)',
         "writes": "one GGUF per quantization, uploaded"},
    ]


# What save_pretrained_gguf does, said before it starts: the first call is silent for minutes.
GGUF_SAVE_NOTICE = ("Unsloth's save_pretrained_gguf: merges the adapters, then (through unsloth_zoo) downloads and "
                    "builds llama.cpp the first time (several minutes with no output; it needs the network), "
                    "converts the merged model and quantizes it.")


class ExplainedGgufSave:
    """Around ``model.save_pretrained_gguf(...)`` (a ``with`` block): says what the call does before it starts, then
    lists the files it wrote, or turns its failure into one line so that the notebook goes on.

    Offline, or where llama.cpp cannot be built, unsloth_zoo raises; the GGUF files written by the workbook's own
    converter (the cell before) are what the next cells use either way.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.error: str | None = None
        self.files: list[str] = []

    def __enter__(self) -> ExplainedGgufSave:
        print(GGUF_SAVE_NOTICE, flush=True)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any) -> bool:
        if error is None:
            self.files = sorted(p.name for p in self.folder.rglob("*.gguf"))
            print("Unsloth's own GGUF:", ", ".join(self.files) or "(no .gguf file found)")
            return False
        if not isinstance(error, Exception):  # KeyboardInterrupt and the like stop the notebook as usual
            return False
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        self.error = f"{type(error).__name__}: {first_line}"
        print(f"Unsloth's save_pretrained_gguf failed ({self.error}). Nothing else depends on it: the GGUF files "
              "above, written by the workbook's own converter, are the ones the next cells use.")
        return True


def chat_markers(tokenizer: Any) -> tuple[str, str]:
    """``(instruction_part, response_part)`` for ``train_on_responses_only``: the text that opens a user turn and
    the text that opens the assistant's, read from the tokenizer's chat template."""
    from course_utils.finetuning.sft_data import render_turns

    sentinel = "\u2063SENTINEL\u2063"
    head, tail = render_turns(tokenizer, sentinel, None).split(sentinel)
    specials = [t for t in tokenizer.all_special_tokens if t]

    def from_last_special(text: str) -> str:
        starts = [text.rfind(t) for t in specials if t in text]
        return text[max(starts):] if starts else text

    return from_last_special(head), from_last_special(tail)
