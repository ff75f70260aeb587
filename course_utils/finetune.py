"""Supervised fine-tuning with LoRA or QLoRA, in the rhythm of Unsloth's notebooks, behind one small API.

The steps, each one function::

    model, tokenizer = load_model(name, load_in_4bit=False)         # 16/32-bit base, or NF4 for QLoRA
    model = add_adapters(model, LoraSettings(r=16, alpha=32))       # LoRA on q,k,v,o,gate,up,down
    train_data = format_dataset(rows, tokenizer)                    # prompt/completion -> ids, labels (-100 on prompt)
    before = memory_stats()
    result = train(model, tokenizer, train_data, SFTSettings(max_steps=300), eval_data=val_data)
    predictions = generate(model, tokenizer, prompts)               # greedy, batched, left padding
    save_adapter(model, "adapter/", tokenizer); merged = merge(model); save_merged(merged, tokenizer, "merged/")

**Backends.** What depends on the library that loads and patches the model (loading, adding adapters, switching
to inference, merging and saving the merged model) is a method of a :class:`Backend`. :class:`PeftBackend` does
it with transformers + PEFT + bitsandbytes on any device. Another backend (Unsloth, on a GPU) subclasses
:class:`Backend`, overrides those methods and calls :func:`register_backend`; ``backend="auto"`` then prefers it
where it says it is available. Everything else here (data, collator, training with the transformers ``Trainer``,
evaluation, memory, timing) works on any backend's model unchanged. :func:`load_model` tags the model with its
backend's name, so later calls find the backend without being told.

**Why the transformers Trainer, with our own tokenization and collator.** The label mask is the lesson: we build
``labels`` ourselves (``-100`` on the prompt and on padding) and the notebook decodes them, instead of leaving it
to TRL's ``SFTTrainer`` options. The ``Trainer`` supplies what a fine-tuning run needs and a hand loop would
repeat (mixed precision, gradient accumulation, the schedule, logging), is what ``SFTTrainer`` itself extends,
and is what Unsloth patches, so an Unsloth backend trains with the same :func:`train`.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from course_utils import env, lora, metrics, paths, sources
from course_utils.course_documents import EXAM_NOTES, WORKSHOP_GUIDE

IGNORE_INDEX = -100  # the label value the cross-entropy of transformers (and PyTorch) skips


# ================================================================================================ settings
@dataclass(frozen=True)
class LoraSettings:
    """The adapter: rank ``r``, scale ``alpha / r``, dropout, which linear layers, and the seed of ``A``'s init."""

    r: int = 16
    alpha: float = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = lora.LLAMA_TARGETS
    gradient_checkpointing: bool = False
    seed: int = 0

    def peft_config(self) -> Any:
        """The equivalent ``peft.LoraConfig``."""
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), bias="none", task_type="CAUSAL_LM")


@dataclass(frozen=True)
class SFTSettings:
    """Every knob of :func:`train` (the names follow transformers' ``TrainingArguments`` where they exist)."""

    max_steps: int = 300
    batch_size: int = 16
    grad_accum_steps: int = 1
    learning_rate: float = 3e-3
    warmup_steps: int = 10
    lr_scheduler: str = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    logging_steps: int = 10
    eval_steps: int | None = None  # None: evaluate the held-out loss only at the end
    seed: int = 0
    ddp_find_unused_parameters: bool | None = None  # several processes (DDP): False when every parameter is used

    def training_arguments(self, output_dir: str, device: torch.device) -> Any:
        """``TrainingArguments`` for ``device``: bf16 or fp16 autocast where :func:`env.pick_precision` says so."""
        from transformers import TrainingArguments

        precision = env.pick_precision(device)
        return TrainingArguments(
            output_dir=output_dir, max_steps=self.max_steps, per_device_train_batch_size=self.batch_size,
            per_device_eval_batch_size=max(self.batch_size, 32), gradient_accumulation_steps=self.grad_accum_steps,
            learning_rate=self.learning_rate, warmup_steps=self.warmup_steps, lr_scheduler_type=self.lr_scheduler,
            weight_decay=self.weight_decay, max_grad_norm=self.max_grad_norm, optim=self.optim,
            logging_steps=self.logging_steps, eval_strategy="steps" if self.eval_steps else "no",
            eval_steps=self.eval_steps, save_strategy="no", report_to="none", seed=self.seed, data_seed=self.seed,
            use_cpu=device.type == "cpu", bf16=precision.autocast_dtype == torch.bfloat16,
            fp16=precision.autocast_dtype == torch.float16, remove_unused_columns=False, label_names=["labels"],
            dataloader_pin_memory=device.type == "cuda", disable_tqdm=False,
            ddp_find_unused_parameters=self.ddp_find_unused_parameters,
        )


# ================================================================================================ backends
class Backend:
    """How a library loads, adapts, switches and merges a model; subclass it for another library (Unsloth)."""

    name = "base"

    def available(self) -> tuple[bool, str]:
        """Whether this backend can run here, and why (or why not)."""
        return False, "the base class only defines the interface"

    def load_model(self, name: str, *, load_in_4bit: bool, device: torch.device, dtype: torch.dtype | None,
                   max_seq_length: int) -> tuple[Any, Any]:
        """``(model, tokenizer)``; the model in 4-bit NF4 with ``load_in_4bit``."""
        raise NotImplementedError

    def add_adapters(self, model: Any, settings: LoraSettings) -> Any:
        """The model with trainable LoRA adapters on a frozen base."""
        raise NotImplementedError

    def for_inference(self, model: Any) -> Any:
        """Switch to generation (eval mode, KV cache on)."""
        model.eval()
        if getattr(model, "config", None) is not None:
            model.config.use_cache = True
        return model

    def for_training(self, model: Any) -> Any:
        """Switch back to training."""
        model.train()
        return model

    def make_trainer(self, model: Any, args: Any, train_data: Any, eval_data: Any, collator: Any,
                     callbacks: list[Any]) -> Any:
        """The trainer :func:`train` runs: transformers' ``Trainer`` (a backend may return its own subclass)."""
        from transformers import Trainer

        return Trainer(model=model, args=args, train_dataset=train_data, eval_dataset=eval_data,
                       data_collator=collator, callbacks=callbacks)

    def merge(self, model: Any) -> Any:
        """A plain model with ``W0 + (alpha/r) B A`` in each adapted layer."""
        return model.merge_and_unload()

    def save_merged(self, model: Any, tokenizer: Any, folder: Path) -> Path:
        """Write a merged model (safetensors) and its tokenizer to ``folder``."""
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return folder


class PeftBackend(Backend):
    """transformers + PEFT, and bitsandbytes for 4-bit: works on CPU, CUDA and MPS (4-bit on CPU and CUDA)."""

    name = "peft"

    def available(self) -> tuple[bool, str]:
        try:
            import peft  # noqa: F401
            import transformers  # noqa: F401
        except ImportError as exc:
            return False, f"{exc.name} is not installed"
        return True, "transformers + PEFT (+ bitsandbytes for 4-bit)"

    def load_model(self, name: str, *, load_in_4bit: bool, device: torch.device, dtype: torch.dtype | None,
                   max_seq_length: int) -> tuple[Any, Any]:
        kwargs: dict[str, Any] = {}
        if load_in_4bit and not saved_quantized(name):  # a pre-quantized checkpoint brings its own config
            kwargs["quantization_config"] = nf4_config(compute_dtype=dtype, device=device)
            if device.type == "cuda":
                kwargs["device_map"] = {"": device.index or 0}
        model, tokenizer = sources.load_causal_lm(name, dtype=dtype, device=device, verbose=False, **kwargs)
        tokenizer.model_max_length = min(tokenizer.model_max_length, max_seq_length)
        return model, tokenizer

    def add_adapters(self, model: Any, settings: LoraSettings) -> Any:
        from peft import get_peft_model, prepare_model_for_kbit_training

        if is_quantized(model):
            # Freezes the base, casts norms/embeddings/head to fp32 for stable training, enables input grads.
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=settings.gradient_checkpointing)
        elif settings.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()
        torch.manual_seed(settings.seed)
        with quiet_peft():
            peft_model = get_peft_model(model, settings.peft_config())
        peft_model.train()
        return peft_model


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """Silence one FutureWarning: PEFT 0.21 reads an attribute transformers 5 deprecates (not ours to fix)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def saved_quantized(name: str) -> bool:
    """Whether ``name`` is a local checkpoint saved already quantized (its config.json has a quantization_config)."""
    config_file = Path(sources.resolve_model(name).location) / "config.json"
    return config_file.is_file() and "quantization_config" in json.loads(config_file.read_text())


BACKENDS: dict[str, Backend] = {"peft": PeftBackend()}
AUTO_ORDER: list[str] = ["peft"]  # a registered GPU backend goes first


def register_backend(backend: Backend, *, prefer: bool = True) -> None:
    """Make ``backend`` available by its name; with ``prefer`` it is tried first by ``backend="auto"``."""
    BACKENDS[backend.name] = backend
    if backend.name in AUTO_ORDER:
        AUTO_ORDER.remove(backend.name)
    AUTO_ORDER.insert(0 if prefer else len(AUTO_ORDER), backend.name)


def get_backend(backend: str | Backend | None = "auto", model: Any = None) -> Backend:
    """The backend by name; ``None`` means the one ``model`` was loaded with, ``"auto"`` the first available."""
    if isinstance(backend, Backend):
        return backend
    if backend is None:
        backend = getattr(model, "course_backend", None) or "peft"
    if backend == "auto":
        for name in AUTO_ORDER:
            if BACKENDS[name].available()[0]:
                return BACKENDS[name]
        raise RuntimeError("No fine-tuning backend is available: install transformers and peft.")
    if backend not in BACKENDS:
        raise KeyError(f"Unknown backend {backend!r}; registered: {', '.join(BACKENDS)}.")
    chosen = BACKENDS[backend]
    ok, why = chosen.available()
    if not ok:
        raise RuntimeError(f"Backend {backend!r} is not available here: {why}.")
    return chosen


# ================================================================================================ loading
def nf4_config(compute_dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Any:
    """QLoRA's ``BitsAndBytesConfig``: 4-bit NF4 weights, double quantization, ``compute_dtype`` for the matmuls.

    The default compute dtype is the device's 16-bit format on a GPU (bf16 from Ampere on, fp16 before) and fp32
    on the CPU, where 16-bit math is emulated and slower.
    """
    from transformers import BitsAndBytesConfig

    if compute_dtype is None:
        compute_dtype = env.pick_precision(device).inference_dtype
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def is_quantized(model: Any) -> bool:
    """True when the model (or the base under its adapters) was loaded in 4 or 8 bits."""
    base = getattr(model, "get_base_model", lambda: model)()
    return bool(getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False))


def load_model(name: str, *, load_in_4bit: bool = False, device: torch.device | str | None = None,
               dtype: torch.dtype | None = None, max_seq_length: int = 256,
               backend: str | Backend = "auto") -> tuple[Any, Any]:
    """``(model, tokenizer)`` ready for adapters: the base frozen later by :func:`add_adapters`.

    ``dtype`` defaults to the frozen-weight format of :func:`env.pick_precision` (fp32 on CPU, bf16/fp16 on a
    GPU); with ``load_in_4bit`` it is the compute dtype of the NF4 layers.
    """
    device = env.pick_device(device)
    chosen = get_backend(backend)
    if dtype is None:
        dtype = env.pick_precision(device).inference_dtype
    model, tokenizer = chosen.load_model(name, load_in_4bit=load_in_4bit, device=device, dtype=dtype,
                                         max_seq_length=max_seq_length)
    model.course_backend = chosen.name
    return model, tokenizer


def add_adapters(model: Any, settings: LoraSettings | None = None, *, backend: str | Backend | None = None,
                 **overrides: Any) -> Any:
    """Freeze the base and add LoRA adapters (``settings``, or LoraSettings fields as keywords)."""
    settings = settings or LoraSettings()
    if overrides:
        settings = LoraSettings(**{**settings.__dict__, **overrides})
    chosen = get_backend(backend, model)
    adapted = chosen.add_adapters(model, settings)
    adapted.course_backend = chosen.name
    return adapted


def for_inference(model: Any, backend: str | Backend | None = None) -> Any:
    """Switch ``model`` to generation with its backend."""
    return get_backend(backend, model).for_inference(model)


# ================================================================================================ data
def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer ships a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def _render(tokenizer: Any, prompt: str, completion: str | None) -> str:
    messages = [{"role": "user", "content": prompt}]
    if completion is None:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    messages.append({"role": "assistant", "content": completion})
    return tokenizer.apply_chat_template(messages, tokenize=False)


def encode_prompt(tokenizer: Any, prompt: str, *, chat: bool | None = None) -> list[int]:
    """The token ids the model sees before it answers: the chat template's user turn, or the plain prompt."""
    chat = has_chat_template(tokenizer) if chat is None else chat
    if chat:
        return list(tokenizer(_render(tokenizer, prompt, None), add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt)["input_ids"])


def encode_completion(tokenizer: Any, prompt: str, completion: str, *, chat: bool | None = None) -> list[int]:
    """The ids of the answer, ending with the token that closes the turn (end of text, or the template's own)."""
    chat = has_chat_template(tokenizer) if chat is None else chat
    if chat:
        head, full = _render(tokenizer, prompt, None), _render(tokenizer, prompt, completion)
        if not full.startswith(head):
            raise ValueError("The chat template renders the conversation differently from its prompt part, so the "
                             "prompt cannot be masked by position; use chat=False for this tokenizer.")
        return list(tokenizer(full[len(head):], add_special_tokens=False)["input_ids"])
    return list(tokenizer(completion, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]


def stop_ids(tokenizer: Any, *, chat: bool | None = None) -> list[int]:
    """Token ids that end an answer: end-of-text and, with a chat template, the special token closing its turn."""
    ids = [tokenizer.eos_token_id]
    chat = has_chat_template(tokenizer) if chat is None else chat
    if chat:
        special = set(tokenizer.all_special_ids)
        closing = [i for i in encode_completion(tokenizer, "x", "y", chat=True) if i in special]
        ids += [i for i in closing[:1] if i not in ids]
    return ids


def build_example(prompt_ids: Sequence[int], completion_ids: Sequence[int],
                  max_length: int | None = None) -> dict[str, list[int]]:
    """``input_ids`` = prompt + completion; ``labels`` the same with every prompt position set to -100.

    The labels are NOT shifted: the model compares position t's prediction with label t+1 itself. Too long an
    example is cut from the end (the answer is kept whole if it fits at all).
    """
    input_ids = list(prompt_ids) + list(completion_ids)
    labels = [IGNORE_INDEX] * len(prompt_ids) + list(completion_ids)
    if max_length is not None and len(input_ids) > max_length:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "labels": labels}


def tokenize_example(tokenizer: Any, prompt: str, completion: str, *, chat: bool | None = None,
                     max_length: int | None = None) -> dict[str, list[int]]:
    """One training example from a prompt and its completion, with the prompt masked in the labels."""
    return build_example(encode_prompt(tokenizer, prompt, chat=chat),
                         encode_completion(tokenizer, prompt, completion, chat=chat), max_length)


def format_dataset(rows: Any, tokenizer: Any, *, chat: bool | None = None, max_length: int | None = None,
                   prompt_field: str = "prompt", completion_field: str = "completion") -> Any:
    """A ``datasets.Dataset`` of ``input_ids`` and ``labels`` from rows with a prompt and a completion."""
    from datasets import Dataset

    if not isinstance(rows, Dataset):
        rows = Dataset.from_list(list(rows))
    max_length = max_length or tokenizer.model_max_length

    def encode(row: dict[str, str]) -> dict[str, list[int]]:
        return tokenize_example(tokenizer, row[prompt_field], row[completion_field], chat=chat,
                                max_length=max_length)

    with _quiet_datasets():
        return rows.map(encode, remove_columns=rows.column_names)


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No ``Map: 100%`` bars from ``datasets`` inside the block (a few hundred rows take milliseconds)."""
    from datasets.utils import logging as datasets_logging

    was_enabled = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            datasets_logging.enable_progress_bar()


def show_labels(tokenizer: Any, example: dict[str, Sequence[int]]) -> list[dict[str, Any]]:
    """Each position of an example: its token, its label, and whether the loss sees it (for a table)."""
    rows = []
    for position, (token, label) in enumerate(zip(example["input_ids"], example["labels"])):
        rows.append({"position": position, "token": tokenizer.convert_ids_to_tokens(int(token)),
                     "label": int(label), "in the loss": "yes" if label != IGNORE_INDEX else "-"})
    return rows


def decode_labels(tokenizer: Any, example: dict[str, Sequence[int]], masked: str = "\u00b7") -> str:
    """The example's text with every masked (-100) position replaced by ``masked``: what the loss is computed on."""
    pieces = []
    for token, label in zip(example["input_ids"], example["labels"]):
        pieces.append(tokenizer.decode([int(token)]) if label != IGNORE_INDEX else masked)
    return "".join(pieces)


@dataclass
class CompletionCollator:
    """Pads a list of examples to one batch: input ids with the pad id, labels with -100, and the attention mask.

    Padding goes on the right for training (every sequence starts at position 0); generation pads on the left
    (:func:`metrics.left_pad`).
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: Sequence[dict[str, Sequence[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(e["input_ids"]) for e in examples)
        if self.pad_to_multiple_of:
            width = math.ceil(width / self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {"input_ids": torch.full((len(examples), width), self.pad_token_id, dtype=torch.long),
                 "attention_mask": torch.zeros((len(examples), width), dtype=torch.long),
                 "labels": torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)}
        for row, example in enumerate(examples):
            n = len(example["input_ids"])
            batch["input_ids"][row, :n] = torch.as_tensor(example["input_ids"], dtype=torch.long)
            batch["attention_mask"][row, :n] = 1
            batch["labels"][row, :n] = torch.as_tensor(example["labels"], dtype=torch.long)
        return batch


# ================================================================================================ memory
@dataclass(frozen=True)
class MemoryPeak:
    """Peak memory while a block ran, above what was in use when it started, and how it was measured."""

    peak_bytes: int
    start_bytes: int
    method: str

    @property
    def increase_bytes(self) -> int:
        return max(0, self.peak_bytes - self.start_bytes)


def _rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _read_status(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _trim_heap() -> None:
    """Give memory that was freed back to the operating system (glibc's malloc_trim), so each measurement starts
    from what is really in use rather than from what earlier runs left cached in the heap."""
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


class _Sampler(threading.Thread):
    def __init__(self, every: float = 0.005):
        super().__init__(daemon=True)
        self.every, self.peak, self.done = every, _rss_bytes(), threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.peak = max(self.peak, _rss_bytes())


@contextlib.contextmanager
def measure_peak_memory(device: torch.device | str | None = None) -> Iterator[dict[str, MemoryPeak]]:
    """Measure peak memory of the block: ``with measure_peak_memory(dev) as m: ...; m["peak"]`` afterwards.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors only) after resetting the peak. CPU on Linux: the kernel's
    own high-water mark of the process's resident memory (VmHWM), reset through ``/proc/self/clear_refs``: every
    byte the process touches, Python and libraries included. Elsewhere: resident memory sampled every 5 ms.
    """
    device = env.pick_device(device)
    out: dict[str, MemoryPeak] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        yield out
        torch.cuda.synchronize(device)
        out["peak"] = MemoryPeak(torch.cuda.max_memory_allocated(device), start,
                                 "torch.cuda.max_memory_allocated (GPU tensors)")
        return
    _trim_heap()
    start = _rss_bytes()
    can_reset = False
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # 5: reset the peak resident set size to the current one
        can_reset = _read_status("VmHWM") is not None
    sampler = None if can_reset else _Sampler()
    if sampler is not None:
        sampler.start()
    try:
        yield out
    finally:
        if sampler is not None:
            sampler.done.set()
            sampler.join()
            out["peak"] = MemoryPeak(sampler.peak, start, "process resident memory, sampled every 5 ms (psutil)")
        else:
            out["peak"] = MemoryPeak(int(_read_status("VmHWM") or 0), start,
                                     "process peak resident memory (Linux VmHWM, reset before the run)")


def memory_stats(device: torch.device | str | None = None) -> dict[str, Any]:
    """What the device holds now: GPU memory on CUDA (allocated, reserved, total), process RAM on the CPU."""
    device = env.pick_device(device)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return {"device": torch.cuda.get_device_name(device),
                "allocated": human_bytes(torch.cuda.memory_allocated(device)),
                "reserved": human_bytes(torch.cuda.memory_reserved(device)), "total": human_bytes(total)}
    total, available = env.system_memory()
    return {"device": device.type, "process resident memory": human_bytes(_rss_bytes()),
            "system total": human_bytes(total), "system available": human_bytes(available)}


def model_bytes(model: Any) -> int:
    """Bytes of the model's parameters and buffers as stored (4-bit weights count half a byte each)."""
    if hasattr(model, "get_memory_footprint"):
        return int(model.get_memory_footprint())
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


# ================================================================================================ training
@dataclass
class TrainResult:
    """What :func:`train` measured."""

    steps: int
    log: list[dict[str, float]]  # {"step", "loss", "learning_rate"} every logging_steps; eval losses too
    seconds: float  # wall clock of the whole run
    cpu_seconds: float  # CPU time of this process (all threads) during the run
    step_seconds: list[float] = field(default_factory=list)  # wall time of each optimizer step
    peak: MemoryPeak | None = None
    eval_loss: float | None = None

    @property
    def seconds_per_step(self) -> float:
        """Mean wall time of a step, leaving out the first (one-time set-up: kernels, caches, allocations)."""
        steady = self.step_seconds[1:] or self.step_seconds
        return sum(steady) / len(steady) if steady else self.seconds / max(1, self.steps)

    @property
    def cpu_seconds_per_step(self) -> float:
        return self.cpu_seconds / max(1, self.steps)

    @property
    def first_step_seconds(self) -> float:
        return self.step_seconds[0] if self.step_seconds else float("nan")

    @property
    def final_train_loss(self) -> float:
        losses = [entry["loss"] for entry in self.log if "loss" in entry]
        return losses[-1] if losses else float("nan")

    def loss_curve(self) -> tuple[list[float], list[float]]:
        """(steps, training loss) at every logging step."""
        points = [(e["step"], e["loss"]) for e in self.log if "loss" in e]
        return [p[0] for p in points], [p[1] for p in points]


def plot_runs(runs: dict[str, TrainResult]) -> Any:
    """Training loss against the step for each named run, with its final held-out loss as a marker; a Figure."""
    from course_utils.plots import new_figure

    fig = new_figure(figsize=(6.5, 3.4), layout="constrained")
    ax = fig.subplots()
    for label, result in runs.items():
        steps, losses = result.loss_curve()
        line = ax.plot(steps, losses, marker=".", label=f"{label}: training loss")[0]
        if result.eval_loss is not None:
            ax.scatter([result.steps], [result.eval_loss], color=line.get_color(), marker="*", s=120, zorder=3,
                       label=f"{label}: held-out loss at the end")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy per completion token")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _live_progress(total: int, enabled: bool) -> Any:
    """A tqdm bar over optimizer steps with the latest loss, instead of the Trainer's printed log dicts."""
    from transformers import TrainerCallback

    class LiveProgress(TrainerCallback):
        def __init__(self) -> None:
            self.bar = None

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - the Trainer's signature
            if enabled:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc="training", unit="step")

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if self.bar is not None:
                self.bar.update(1)

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if self.bar is not None and logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}")

        def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if self.bar is not None:
                self.bar.close()

    return LiveProgress()


def _step_timer() -> Any:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._start = 0.0

        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - the Trainer's signature
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            self.seconds.append(time.perf_counter() - self._start)

    return StepTimer()


def train(model: Any, tokenizer: Any, train_data: Any, settings: SFTSettings | None = None, *,
          eval_data: Any = None, backend: str | Backend | None = None, output_dir: str | Path | None = None,
          progress: bool = True) -> TrainResult:
    """Fine-tune the adapters of ``model`` on ``train_data`` (from :func:`format_dataset`) with the Trainer.

    Measures wall and CPU time, each step's time, and peak memory (:func:`measure_peak_memory`); evaluates the
    held-out loss on ``eval_data`` at the end (and every ``settings.eval_steps`` if set).
    """
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    settings = settings or SFTSettings()
    chosen = get_backend(backend, model)
    device = next(model.parameters()).device
    chosen.for_training(model)
    timer = _step_timer()
    with tempfile.TemporaryDirectory() as scratch:
        args = settings.training_arguments(str(output_dir or scratch), device)
        trainer = chosen.make_trainer(model, args, train_data, eval_data, CompletionCollator(tokenizer.pad_token_id),
                                      [timer])
        for callback in list(trainer.callback_handler.callbacks):  # they print log dicts or HTML tables
            if isinstance(callback, (ProgressCallback, PrinterCallback)) or \
                    type(callback).__name__ == "NotebookProgressCallback":
                trainer.remove_callback(callback)
        trainer.add_callback(_live_progress(settings.max_steps, progress))
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        with measure_peak_memory(device) as memory:
            trainer.train()
        seconds, cpu_seconds = time.perf_counter() - wall_start, time.process_time() - cpu_start
    log = [{k: float(v) for k, v in entry.items() if isinstance(v, (int, float))}
           for entry in trainer.state.log_history if "loss" in entry or "eval_loss" in entry]
    result = TrainResult(steps=int(trainer.state.global_step), log=log, seconds=seconds, cpu_seconds=cpu_seconds,
                         step_seconds=timer.seconds, peak=memory["peak"])
    if eval_data is not None:
        result.eval_loss = evaluate_loss(model, tokenizer, eval_data, batch_size=args.per_device_eval_batch_size)
    chosen.for_inference(model)
    return result


@torch.no_grad()
def evaluate_loss(model: Any, tokenizer: Any, data: Any, batch_size: int = 32) -> float:
    """Mean cross-entropy per completion token (prompt and padding masked) over ``data``."""
    collate = CompletionCollator(tokenizer.pad_token_id)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(data), batch_size):
        batch = collate([data[i] for i in range(start, min(start + batch_size, len(data)))])
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        targets = batch["labels"][:, 1:]
        losses = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(),
                                                   ignore_index=IGNORE_INDEX, reduction="sum")
        total += losses.item()
        count += int((targets != IGNORE_INDEX).sum())
    model.train(was_training)
    return total / max(1, count)


@torch.no_grad()
def answer_token_probabilities(model: Any, tokenizer: Any, example: dict[str, Sequence[int]]) -> list[dict[str, Any]]:
    """For each answer token of a tokenized example: the probability the model gives it, and its greedy choice."""
    device = next(model.parameters()).device
    ids = torch.tensor([list(example["input_ids"])], device=device)
    was_training = model.training
    model.eval()
    probabilities = torch.softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    model.train(was_training)
    rows = []
    for position, label in enumerate(example["labels"][1:]):
        if label == IGNORE_INDEX:
            continue
        best = int(probabilities[position].argmax())
        rows.append({"token": tokenizer.convert_ids_to_tokens(int(label)),
                     "p(token)": float(probabilities[position, label]),
                     "greedy choice": tokenizer.convert_ids_to_tokens(best),
                     "right?": "yes" if best == label else "no"})
    return rows


# ================================================================================================ inference, scoring
def generate(model: Any, tokenizer: Any, prompts: Sequence[str], *, chat: bool | None = None,
             max_new_tokens: int = 16, batch_size: int = 32) -> list[str]:
    """Greedy answers to raw prompts, formatted exactly as in training (chat template or plain)."""
    ids = [encode_prompt(tokenizer, p, chat=chat) for p in prompts]
    return metrics.generate(model, tokenizer, ids, max_new_tokens=max_new_tokens, batch_size=batch_size,
                            stop_ids=stop_ids(tokenizer, chat=chat))


@dataclass
class Evaluation:
    """Generated answers beside their references, and the scores from :func:`metrics.score`."""

    prompts: list[str]
    references: list[str]
    predictions: list[str]
    scores: dict[str, float]
    seconds: float


def evaluate_generation(model: Any, tokenizer: Any, rows: Any, *, chat: bool | None = None,
                        max_new_tokens: int | None = None, batch_size: int = 32, prompt_field: str = "prompt",
                        completion_field: str = "completion") -> Evaluation:
    """Answer every row's prompt greedily and score the answers against its completion."""
    prompts = [row[prompt_field] for row in rows]
    references = [row[completion_field] for row in rows]
    if max_new_tokens is None:  # room for the longest reference and a few tokens more
        longest = max(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in references)
        max_new_tokens = longest + 4
    start = time.perf_counter()
    predictions = generate(model, tokenizer, prompts, chat=chat, max_new_tokens=max_new_tokens,
                           batch_size=batch_size)
    seconds = time.perf_counter() - start
    return Evaluation(prompts, references, predictions, metrics.score(predictions, references), seconds)


# ================================================================================================ saving, merging
def save_adapter(model: Any, folder: str | Path, tokenizer: Any = None) -> Path:
    """``save_pretrained`` of the adapter only: ``adapter_model.safetensors`` + ``adapter_config.json``."""
    folder = Path(folder)
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def adapter_config(folder: str | Path) -> dict[str, Any]:
    """The saved ``adapter_config.json`` as a dict."""
    return json.loads((Path(folder) / "adapter_config.json").read_text())


display_path = paths.display_path  # notebooks 05 and 06 print their folders with finetune.display_path


def load_adapter(base: Any, folder: str | Path, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, adapter_name: str = "default", trainable: bool = False) -> Any:
    """``PeftModel.from_pretrained``: put the saved adapter on a base model (a loaded model, or a name to load)."""
    from peft import PeftModel

    if isinstance(base, str):
        device = env.pick_device(device)
        dtype = dtype or env.pick_precision(device).inference_dtype
        base, _ = sources.load_causal_lm(base, dtype=dtype, device=device, verbose=False)
    with quiet_peft():
        model = PeftModel.from_pretrained(base, str(folder), adapter_name=adapter_name, is_trainable=trainable)
    return model.eval()


def load_adapter_auto(folder: str | Path, *, device: torch.device | str | None = None,
                      dtype: torch.dtype | None = None) -> Any:
    """``AutoPeftModelForCausalLM.from_pretrained``: the base named in ``adapter_config.json``, then the adapter."""
    from peft import AutoPeftModelForCausalLM

    device = env.pick_device(device)
    dtype = dtype or env.pick_precision(device).inference_dtype
    with quiet_peft():
        model = AutoPeftModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    return model.to(device).eval()


def merge(model: Any, backend: str | Backend | None = None) -> Any:
    """``merge_and_unload``: fold ``(alpha/r) B A`` into each base weight and drop the adapter modules."""
    return get_backend(backend, model).merge(model)


def save_merged(model: Any, tokenizer: Any, folder: str | Path, backend: str | Backend | None = None) -> Path:
    """Save a merged model as a standalone checkpoint (safetensors, config, tokenizer)."""
    folder = Path(folder)
    return get_backend(backend, model).save_merged(model, tokenizer, folder)


def folder_bytes(folder: str | Path) -> dict[str, int]:
    """Size of each file in ``folder``, largest first."""
    files = {p.name: p.stat().st_size for p in Path(folder).iterdir() if p.is_file()}
    return dict(sorted(files.items(), key=lambda item: -item[1]))


# ================================================================================================ timing
@torch.no_grad()
def seconds_per_token(model: Any, tokenizer: Any, prompt_ids: Sequence[int], *, new_tokens: int = 32,
                      repeats: int = 3) -> float:
    """Best-of-``repeats`` wall time per generated token, batch 1, greedy, exactly ``new_tokens`` tokens."""
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids)], device=device)
    config = metrics.greedy_config(new_tokens, [tokenizer.eos_token_id], tokenizer.pad_token_id,
                                   min_new_tokens=new_tokens)
    model.eval()
    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)  # warm-up
    best = math.inf
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best / new_tokens


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cold_start(load: Callable[[], Any], tokenizer: Any, prompt_ids: Sequence[int]) -> tuple[float, Any]:
    """Seconds from nothing in memory to the first generated token: ``load()`` then one greedy token."""
    start = time.perf_counter()
    model = load()
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids)], device=device)
    config = metrics.greedy_config(1, [tokenizer.eos_token_id], tokenizer.pad_token_id)
    with torch.no_grad():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
    _sync(device)
    return time.perf_counter() - start, model


# ================================================================================================ comparisons
@torch.no_grad()
def logits_on(model: Any, tokenizer: Any, prompts: Sequence[str], *, chat: bool | None = None) -> torch.Tensor:
    """The model's logits (float32, on the CPU) for a left-padded batch of prompts, padding positions zeroed."""
    ids, mask = metrics.left_pad([encode_prompt(tokenizer, p, chat=chat) for p in prompts], tokenizer.pad_token_id)
    device = next(model.parameters()).device
    model.eval()
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().cpu()
    return logits * mask[..., None]


def merge_tolerance(dtype: torch.dtype) -> float:
    """How far merged logits may drift from the adapter's, relative to the largest logit.

    fp32: 1e-4 (only the order of additions changes). 16-bit: 3e-2, because ``W0 + (alpha/r) B A`` is rounded
    to 8 (bf16) or 11 (fp16) significant bits, so small updates to large weights partly round away.
    """
    return 1e-4 if dtype == torch.float32 else 3e-2


def base_dtype(model: Any) -> torch.dtype:
    """The dtype of the frozen base weights (the first floating-point parameter that is not trained)."""
    for p in model.parameters():
        if p.is_floating_point() and not p.requires_grad:
            return p.dtype
    return next(model.parameters()).dtype


def compare_merged(adapter_model: Any, merged_model: Any, tokenizer: Any, prompts: Sequence[str], *,
                   chat: bool | None, load_adapter_model: Callable[[], Any], load_merged_model: Callable[[], Any],
                   new_tokens: int = 32) -> dict[str, Any]:
    """Adapter versus merged on the same prompts: logits, greedy answers, time per token, bytes, cold start."""
    reference = logits_on(adapter_model, tokenizer, prompts, chat=chat)
    merged_logits = logits_on(merged_model, tokenizer, prompts, chat=chat)
    difference = (merged_logits - reference).abs().max().item()
    relative = difference / reference.abs().max().item()
    answers_adapter = generate(adapter_model, tokenizer, prompts, chat=chat)
    answers_merged = generate(merged_model, tokenizer, prompts, chat=chat)
    same = sum(a == b for a, b in zip(answers_adapter, answers_merged)) / len(prompts)
    prompt_ids = encode_prompt(tokenizer, prompts[0], chat=chat)
    rows = []
    for label, model, load in (("adapter (PeftModel)", adapter_model, load_adapter_model),
                               ("merged (merge_and_unload)", merged_model, load_merged_model)):
        cold, fresh = cold_start(load, tokenizer, prompt_ids)
        del fresh
        rows.append({"model": label, "ms per token": 1000 * seconds_per_token(model, tokenizer, prompt_ids,
                                                                              new_tokens=new_tokens),
                     "model MiB": model_bytes(model) / 2**20, "cold start s": cold})
    tolerance = merge_tolerance(base_dtype(merged_model))
    return {"rows": rows, "max logit difference": difference, "relative difference": relative,
            "tolerance": tolerance, "within tolerance": relative <= tolerance, "same greedy answers": same}


@torch.no_grad()
def generate_mixed(model: Any, tokenizer: Any, prompts: Sequence[str], adapter_names: Sequence[str], *,
                   chat: bool | None = None, max_new_tokens: int = 12) -> list[str]:
    """One batch, one base model, a different adapter per row (``"__base__"``: none): PEFT's mixed-batch inference."""
    ids, mask = metrics.left_pad([encode_prompt(tokenizer, p, chat=chat) for p in prompts], tokenizer.pad_token_id)
    device = next(model.parameters()).device
    stops = stop_ids(tokenizer, chat=chat)
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                         generation_config=metrics.greedy_config(max_new_tokens, stops, tokenizer.pad_token_id),
                         adapter_names=list(adapter_names))
    return [tokenizer.decode(metrics.cut_at_stop(row, stops), skip_special_tokens=True)
            for row in out[:, ids.shape[1]:].tolist()]


def tenancy_table(models: dict[str, tuple[float, float]], tenants: Sequence[int] = (1, 10, 100)) -> list[dict[str, Any]]:
    """GiB to serve N fine-tuned variants: N merged copies, or one base plus N adapters.

    ``models`` maps a label to ``(base bytes, adapter bytes)``. Weights only: KV cache and activations come on top.
    """
    rows = []
    for label, (base_bytes, adapter_bytes) in models.items():
        for n in tenants:
            rows.append({"model": label, "fine-tuned variants": n, "N merged copies": human_bytes(n * base_bytes),
                         "one base + N adapters": human_bytes(base_bytes + n * adapter_bytes),
                         "adapter / base": f"{adapter_bytes / base_bytes:.2%}"})
    return rows


def human_bytes(n: float) -> str:
    """``n`` bytes in KiB, MiB or GiB, whichever reads best (``"1.80 MiB"``)."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def run_summary(label: str, model: Any, result: TrainResult, evaluation: Evaluation) -> dict[str, Any]:
    """One row of the LoRA-versus-QLoRA table."""
    peak = result.peak
    return {"run": label, "model MiB": model_bytes(model) / 2**20,
            "training peak above start MiB": (peak.increase_bytes / 2**20) if peak else float("nan"),
            "s per step": result.seconds_per_step, "CPU s per step": result.cpu_seconds_per_step,
            "held-out loss": result.eval_loss if result.eval_loss is not None else float("nan"),
            "exact match": evaluation.scores["exact match"], "token F1": evaluation.scores["token F1"]}


def claims_verdicts(lora_row: dict[str, Any], qlora_row: dict[str, Any]) -> list[dict[str, str]]:
    """The course documents' claims about QLoRA against LoRA, each beside what this run measured and whether it agrees."""
    memory_ratio = qlora_row["model MiB"] / lora_row["model MiB"]
    peak_ratio = qlora_row["training peak above start MiB"] / max(lora_row["training peak above start MiB"], 1e-9)
    slower = qlora_row["s per step"] / lora_row["s per step"]
    accuracy_gap = lora_row["exact match"] - qlora_row["exact match"]
    if peak_ratio < 0.8:
        peak = "peak lower too"
    elif peak_ratio <= 1.25:
        peak = "peak about the same"
    else:
        peak = "peak higher"
    return [
        {"claim (course documents)": f"QLoRA needs far less memory than LoRA ({EXAM_NOTES}: 'very low' against 'high')",
         "measured here": f"model {memory_ratio:.2f}x of LoRA's; training peak {peak_ratio:.2f}x",
         "borne out?": ("yes for the model" if memory_ratio < 0.6 else "no for the model") + f"; {peak}"},
        {"claim (course documents)": f"QLoRA trains slower, from dequantization ({WORKSHOP_GUIDE}: about 10% slower)",
         "measured here": f"{slower:.2f}x LoRA's time per step",
         "borne out?": "yes" if slower > 1.05 else "no"},
        {"claim (course documents)": (f"QLoRA's accuracy equals LoRA's ({EXAM_NOTES}: 'equivalent'; "
                                       f"{WORKSHOP_GUIDE}: 'minimal' loss)"),
         "measured here": f"exact match {qlora_row['exact match']:.0%} against {lora_row['exact match']:.0%}",
         "borne out?": "yes" if abs(accuracy_gap) <= 0.05 else
                       ("no: QLoRA lower" if accuracy_gap > 0 else "no: QLoRA higher")},
    ]


def release_memory() -> None:
    """Collect garbage and give cached GPU memory back (call after ``del`` of models you no longer need)."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
