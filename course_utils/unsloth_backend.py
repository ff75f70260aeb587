"""Unsloth as a :class:`course_utils.finetune.Backend`: the same ``finetune`` calls, Unsloth's loading and kernels.

Unsloth (``pip install unsloth``, the workbook's ``gpu`` extra) rewrites the attention, RoPE, RMSNorm, MLP and
cross-entropy of supported models as Triton kernels, adds its own gradient checkpointing that offloads
activations to CPU memory, and loads pre-quantized 4-bit checkpoints. Its notebooks follow one rhythm::

    from unsloth import FastLanguageModel            # first, before transformers, peft and trl
    model, tokenizer = FastLanguageModel.from_pretrained(name, max_seq_length=..., dtype=None, load_in_4bit=True)
    model = FastLanguageModel.get_peft_model(model, r=16, target_modules=[...], lora_alpha=16,
                                             use_gradient_checkpointing="unsloth")
    trainer = SFTTrainer(model=model, args=SFTConfig(...), train_dataset=...)   # TRL
    trainer = train_on_responses_only(trainer, instruction_part=..., response_part=...)
    trainer.train()
    FastLanguageModel.for_inference(model)
    model.save_pretrained_merged(folder, tokenizer, save_method="merged_16bit")
    model.save_pretrained_gguf(folder, tokenizer, quantization_method="q4_k_m")

:class:`UnslothBackend` maps ``finetune.load_model`` / ``add_adapters`` / ``for_inference`` / ``save_merged`` onto
those calls and trains with TRL's ``SFTTrainer``. Unsloth needs an NVIDIA GPU (or AMD/Intel with their builds);
:meth:`UnslothBackend.available` says False anywhere else, with the reason, and ``backend="auto"`` then takes
PEFT. Nothing here imports unsloth when this module is imported: importing it patches transformers, must happen
before transformers is imported to patch everything, and raises on a machine without a GPU.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from course_utils import finetune, sources

# Unsloth's published claims (its README), to set beside what a run measures; never measured on the CPU.
PUBLISHED_CLAIMS = {"speed": "about 2x faster", "memory": "up to 70% less memory",
                    "against": "Hugging Face transformers + Flash Attention 2"}
# Modules whose import before unsloth's means some of its patches may not apply (unsloth warns about these).
PATCHED_LIBRARIES = ("transformers", "peft", "trl")


def _gpu_reason() -> str | None:
    """None when a GPU Unsloth can use is present, else why not."""
    if torch.cuda.is_available():
        return None
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        return None
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return ("this is an Apple GPU (MPS): Unsloth's training kernels are written in Triton for NVIDIA, AMD and "
                "Intel GPUs, which Apple's Metal does not run")
    return ("no CUDA GPU: Unsloth's kernels are Triton GPU kernels (NVIDIA, or AMD/Intel with their builds), and "
            "importing unsloth without one raises")


def unsloth_installed() -> bool:
    """Whether the unsloth package is installed (found without importing it)."""
    return importlib.util.find_spec("unsloth") is not None


class UnslothBackend(finetune.Backend):
    """Loading, adapters, inference mode and 16-bit merging through Unsloth's ``FastLanguageModel``."""

    name = "unsloth"

    def __init__(self) -> None:
        self._checked: tuple[bool, str] | None = None

    def available(self) -> tuple[bool, str]:
        if self._checked is not None:
            return self._checked
        reason = _gpu_reason()
        if reason is not None:
            return False, reason  # not cached: a test may fake a GPU later
        if not unsloth_installed():
            return False, "unsloth is not installed (pip install the workbook's gpu extra: pip install -e '.[gpu]')"
        try:
            import unsloth  # noqa: F401 - the import is the check (it also applies unsloth's patches)
        except Exception as exc:  # noqa: BLE001 - any failure to import means "not available", with the reason
            self._checked = (False, f"importing unsloth failed: {type(exc).__name__}: {str(exc)[:200]}")
        else:
            self._checked = (True, f"unsloth {_version('unsloth')} on {_device_name()}")
        return self._checked

    # -------------------------------------------------------------------------------------------- the rhythm
    def load_model(self, name: str, *, load_in_4bit: bool, device: torch.device, dtype: torch.dtype | None,
                   max_seq_length: int) -> tuple[Any, Any]:
        from unsloth import FastLanguageModel

        location = sources.resolve_model(name).location
        # dtype=None lets Unsloth pick bf16 where the GPU has it and fp16 elsewhere (a T4); finetune passes the same.
        placement = {"device_map": {"": device.index or 0}} if device.type == "cuda" else {}  # one GPU per rank
        model, tokenizer = FastLanguageModel.from_pretrained(model_name=location, max_seq_length=max_seq_length,
                                                             dtype=dtype, load_in_4bit=load_in_4bit, **placement)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.course_tokenizer = tokenizer  # SFTTrainer wants it; finetune.train does not pass it to the backend
        return model, tokenizer

    def add_adapters(self, model: Any, settings: finetune.LoraSettings) -> Any:
        from unsloth import FastLanguageModel

        tokenizer = getattr(model, "course_tokenizer", None)
        adapted = FastLanguageModel.get_peft_model(
            model, r=settings.r, target_modules=list(settings.target_modules), lora_alpha=settings.alpha,
            lora_dropout=settings.dropout, bias="none", random_state=settings.seed,
            # "unsloth": its own checkpointing, which offloads activations to CPU memory between the passes
            use_gradient_checkpointing="unsloth" if settings.gradient_checkpointing else False)
        adapted.course_tokenizer = tokenizer
        return adapted

    def for_inference(self, model: Any) -> Any:
        from unsloth import FastLanguageModel

        FastLanguageModel.for_inference(model)  # its faster generation path, KV cache on
        return model

    def for_training(self, model: Any) -> Any:
        from unsloth import FastLanguageModel

        FastLanguageModel.for_training(model)
        return model

    def make_trainer(self, model: Any, args: Any, train_data: Any, eval_data: Any, collator: Any,
                     callbacks: list[Any]) -> Any:
        return sft_trainer(model, args, train_data, eval_data, collator, callbacks,
                           tokenizer=getattr(model, "course_tokenizer", None))

    def merge(self, model: Any) -> Any:
        # PEFT's merge would re-quantize a 4-bit base; a 16-bit merge goes through save_merged instead.
        if finetune.is_quantized(model):
            raise RuntimeError("Merging into a 4-bit base keeps it 4-bit; use finetune.save_merged (Unsloth's "
                               "save_pretrained_merged with save_method='merged_16bit') for a 16-bit model.")
        return model.merge_and_unload()

    def save_merged(self, model: Any, tokenizer: Any, folder: Path) -> Path:
        model.save_pretrained_merged(str(folder), tokenizer, save_method="merged_16bit")
        return folder


def sft_trainer(model: Any, args: Any, train_data: Any, eval_data: Any, collator: Any, callbacks: list[Any], *,
                tokenizer: Any = None) -> Any:
    """TRL's ``SFTTrainer`` on data that is already tokenized with its label mask (``finetune.format_dataset``).

    ``args`` is the ``TrainingArguments`` of :meth:`finetune.SFTSettings.training_arguments`, copied into an
    ``SFTConfig`` (its subclass) that tells TRL to leave the dataset as it is: our ``labels`` already hold -100 on
    the prompt, which is what ``train_on_responses_only`` or ``completion_only_loss`` would otherwise compute.
    """
    from transformers import TrainingArguments
    from trl import SFTConfig, SFTTrainer

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingArguments)
              if f.init and hasattr(args, f.name)}
    config = SFTConfig(**values, dataset_kwargs={"skip_prepare_dataset": True}, packing=False, max_length=None)
    return SFTTrainer(model=model, args=config, train_dataset=train_data, eval_dataset=eval_data,
                      data_collator=collator, processing_class=tokenizer, callbacks=callbacks)


# ================================================================================================ activation
@dataclass(frozen=True)
class UnslothStatus:
    """What :func:`activate` found: whether Unsloth runs here, why, and which backend ``"auto"`` now picks."""

    available: bool
    reason: str
    imported_before: tuple[str, ...]  # libraries unsloth would patch that were imported before it
    auto_backend: str

    def __str__(self) -> str:
        if self.available:
            late = (f" (imported after {', '.join(self.imported_before)}: restart the runtime and run this cell "
                    "before anything imports them, or some patches are missing)") if self.imported_before else ""
            return f"Unsloth path: {self.reason}{late}. finetune's backend='auto' picks {self.auto_backend!r}."
        return (f"Unsloth NOT used: {self.reason}. The same cells run transformers + PEFT "
                f"(backend='auto' picks {self.auto_backend!r}).")


def activate(*, register: bool = True) -> UnslothStatus:
    """Import unsloth first where it can run and register :class:`UnslothBackend` (preferred by ``"auto"``)."""
    before = tuple(name for name in PATCHED_LIBRARIES if name in sys.modules)
    backend = UnslothBackend()
    ok, reason = backend.available()  # imports unsloth when a GPU and the package are present
    if register:
        finetune.register_backend(backend, prefer=True)
    return UnslothStatus(ok, reason, before if ok else (), finetune.get_backend("auto").name)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "no GPU"


def versions() -> list[dict[str, str]]:
    """The versions that matter for this notebook, and the GPU (read from package metadata: imports nothing)."""
    rows = [{"package": "torch", "version": torch.__version__},
            {"package": "CUDA (torch build)", "version": str(torch.version.cuda)},
            {"package": "GPU", "version": _device_name()}]
    for name in ("unsloth", "unsloth_zoo", "xformers", "triton", "transformers", "peft", "trl", "bitsandbytes",
                 "accelerate", "gguf"):
        rows.append({"package": name, "version": _version(name)})
    return rows


# ================================================================================================ saving, Unsloth's way
def unsloth_save_calls(folder: str, repo_id: str = "<you>/<model>") -> list[dict[str, str]]:
    """Unsloth's one-line savers, each beside what it writes (the notebook runs them only on the Unsloth path)."""
    return [
        {"format": "LoRA adapter", "Unsloth call": f'model.save_pretrained("{folder}/lora")',
         "writes": "adapter_model.safetensors + adapter_config.json (PEFT's format)"},
        {"format": "merged 16-bit", "Unsloth call":
            f'model.save_pretrained_merged("{folder}/merged", tokenizer, save_method="merged_16bit")',
         "writes": "a standalone fp16/bf16 checkpoint: the 4-bit base upcast, LoRA added"},
        {"format": "GGUF", "Unsloth call":
            f'model.save_pretrained_gguf("{folder}/gguf", tokenizer, quantization_method="q4_k_m")',
         "writes": "merges, converts with llama.cpp's converter and quantizes (builds llama.cpp the first time)"},
        {"format": "Hub: merged", "Unsloth call":
            f'model.push_to_hub_merged("{repo_id}", tokenizer, save_method="merged_16bit", token=...)',
         "writes": "the merged checkpoint, uploaded"},
        {"format": "Hub: GGUF", "Unsloth call":
            f'model.push_to_hub_gguf("{repo_id}", tokenizer, quantization_method=["q4_k_m", "q8_0"], token=...)',
         "writes": "one GGUF per quantization, uploaded"},
    ]
