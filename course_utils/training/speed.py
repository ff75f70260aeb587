"""Making training fast: a measured ladder, one change per row, each row keeping the changes above it.

    fp32 baseline -> TF32 matmuls -> fused AdamW -> 16-bit autocast -> SDPA attention
                  -> torch.compile -> vocabulary padded to a multiple of 64 -> larger batch

Every row trains the from-scratch GPT for a few steps on the device at hand and reports tokens per second,
peak memory and the speed-up over the first row. A change that cannot run on this device (TF32 on a CPU, say)
is not measured: its row says why, and the rows below it go on without it. A change that runs but makes
training slower here (bf16 on a CPU without bf16 instructions, say) is measured, shown, and then left out of
the rows below, as you would in practice. Batches are random tokens already on the device, so data loading is
not part of what is timed.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` over the timed steps. A CPU has no such counter, so
there the column counts what a training step holds at its peak: parameters, gradients, the optimizer's two
moment buffers, and every tensor autograd saves for the backward pass (counted with
``torch.autograd.graph.saved_tensors_hooks``, each storage once).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from course_utils.models.gpt import GPT, GPTConfig, padded_vocab_size

MIB = 2**20


@dataclass(frozen=True)
class SpeedSettings:
    """What one ladder row runs with."""

    tf32: bool = False
    fused_adamw: bool = False
    autocast: bool = False          # bf16 autocast (fp16 + GradScaler on GPUs without bf16)
    attention: str = "explicit"     # "explicit" softmax(QK^T)V, or "sdpa"
    compile: bool = False
    pad_vocab: bool = False
    batch_multiplier: int = 1


# (row name, what it changes, the settings it turns on)
RUNGS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("fp32 baseline", "explicit attention, fp32 matmuls, default AdamW", {}),
    ("+ TF32 matmuls", "tensor cores do fp32 matmuls with a 10-bit mantissa", {"tf32": True}),
    ("+ fused AdamW", "one kernel updates every parameter", {"fused_adamw": True}),
    ("+ 16-bit autocast", "matmuls in bf16 (fp16 + GradScaler without bf16)", {"autocast": True}),
    ("+ SDPA attention", "F.scaled_dot_product_attention (the kernel it picks is named when measured)",
     {"attention": "sdpa"}),
    ("+ torch.compile", "graph compiled and fused into fewer kernels", {"compile": True}),
    ("+ vocab padded to x64", "vocabulary rounded up to a multiple of 64", {"pad_vocab": True}),
    ("+ 2x batch", "twice the sequences per step", {"batch_multiplier": 2}),
)

# The pretraining lecture's table: GPT-2-size model, attributed by the course to one A100 GPU.
# (row, tokens per second, reserved memory GB): claims, not measured here.
LECTURE_LADDER: tuple[tuple[str, int, float], ...] = (
    ("Base", 12_526, 26.2422),
    ("Use tensor cores", 27_648, 26.2422),
    ("Fused AdamW optimizer", 28_399, 26.2422),
    ("Pinned memory in the data loader", 28_402, 26.2422),
    ("Using bfloat16 precision", 45_486, 13.7871),
    ("Replacing from-scratch code by PyTorch classes", 55_256, 11.5645),
    ("Using FlashAttention", 91_901, 5.9004),
    ("Using pytorch.compile", 112_046, 6.1875),
)


@dataclass
class LadderRow:
    """One measured (or skipped) row of the ladder."""

    name: str
    change: str
    skipped: str | None = None          # why the change does not apply here; None when it was measured
    tokens_per_second: float | None = None
    peak_memory_mib: float | None = None
    first_step_seconds: float | None = None   # includes compilation when torch.compile is on
    speedup: float | None = None
    kept: bool = True                   # False: measured slower than the rows above, so the rows below go without it
    settings: SpeedSettings = field(default_factory=SpeedSettings)


# ---------------------------------------------------------------------------------------------- applicability
def autocast_dtype_for(device: torch.device) -> tuple[torch.dtype, bool]:
    """The 16-bit type autocast uses on ``device`` and whether it needs a GradScaler.

    CUDA follows the workbook's precision rule (bf16 from Ampere on, fp16 + GradScaler before, e.g. a T4);
    elsewhere the ladder tries bf16, which CPU autocast supports (fast only with bf16 instructions).
    """
    if device.type == "cuda":
        from course_utils.ground.machine import pick_precision

        precision = pick_precision(device)
        return precision.autocast_dtype or torch.float16, precision.use_grad_scaler
    return torch.bfloat16, False


def why_not(change: dict[str, Any], device: torch.device, cfg: GPTConfig, *, compile_on_cpu: bool = False
            ) -> str | None:
    """Why this change cannot run on ``device`` (None: it applies)."""
    cuda = device.type == "cuda"
    if change.get("tf32"):
        if not cuda:
            return f"TF32 is a format of NVIDIA tensor cores (Ampere and newer); a {device.type.upper()} runs fp32 as fp32"
        if torch.cuda.get_device_capability(device)[0] < 8:
            return f"{torch.cuda.get_device_name(device)} predates Ampere: no TF32 tensor cores"
    if change.get("fused_adamw") and device.type not in ("cuda", "cpu", "mps"):
        return f"no fused AdamW kernel for {device.type}"
    if change.get("compile"):
        if device.type == "cpu" and not compile_on_cpu:
            return ("compiling takes longer on a small CPU than this notebook's whole time budget; "
                    "set COMPILE_ON_CPU = True to measure it")
        if device.type == "cpu" and not (shutil.which("g++") or shutil.which("clang++")):
            return "torch.compile on a CPU needs a C++ compiler (g++ or clang++), and none was found"
        if device.type == "mps":
            return "torch.compile support for MPS is still experimental"
    if change.get("pad_vocab") and padded_vocab_size(cfg.vocab_size) == cfg.vocab_size:
        return f"the vocabulary ({cfg.vocab_size}) is already a multiple of 64"
    return None


# ------------------------------------------------------------------------------------------------ measuring
@contextlib.contextmanager
def tf32_matmuls(enabled: bool) -> Iterator[None]:
    """Allow TF32 in CUDA matmuls and convolutions inside the block, restoring the previous setting after.

    torch 2.9 and newer set this with ``fp32_precision`` ("tf32" or "ieee"); reading the legacy ``allow_tf32``
    after the new setting was written raises, so the legacy flags are used only where the new ones do not exist.
    """
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision"):
        targets = [matmul] + ([cudnn] if hasattr(cudnn, "fp32_precision") else [])
        old = [target.fp32_precision for target in targets]
        for target in targets:
            target.fp32_precision = "tf32" if enabled else "ieee"
        try:
            yield
        finally:
            for target, value in zip(targets, old):
                target.fp32_precision = value
        return
    legacy = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32 = cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = legacy


# What each SDPA backend is, in words: the one PyTorch picks depends on the GPU, the dtype and the shapes.
SDPA_KERNELS = {
    "FLASH_ATTENTION": {"cuda": "FlashAttention", "cpu": "PyTorch's fused flash-style CPU kernel"},
    "EFFICIENT_ATTENTION": {"cuda": "memory-efficient attention (not FlashAttention, which needs Ampere or newer)"},
    "CUDNN_ATTENTION": {"cuda": "cuDNN's fused attention"},
    "MATH": {"": "the unfused math path (no fused kernel fits)"},
}


def sdpa_kernel(device: torch.device | str, dtype: torch.dtype, n_head: int, head_dim: int, seq_len: int) -> str | None:
    """Which kernel ``F.scaled_dot_product_attention`` runs for causal attention of this shape here, in words.

    Asks PyTorch's own dispatcher (``torch._fused_sdp_choice``); None where this torch does not have it.
    """
    choose = getattr(torch, "_fused_sdp_choice", None)
    if choose is None:
        return None
    device = torch.device(device)
    q = torch.zeros(1, n_head, seq_len, head_dim, device=device, dtype=dtype)
    try:
        choice = torch.nn.attention.SDPBackend(choose(q, q, q, None, 0.0, True))
    except (RuntimeError, ValueError):
        return None
    return kernel_in_words(choice.name, device.type)


def kernel_in_words(backend: str, device_type: str) -> str:
    """An ``SDPBackend`` name (``"EFFICIENT_ATTENTION"``) as the ladder's note says it for a device type."""
    names = SDPA_KERNELS.get(backend, {})
    return names.get(device_type) or names.get("") or backend


class SavedTensorBytes:
    """Counts the bytes autograd saves for the backward pass (each storage once): activation memory on any device."""

    def __init__(self) -> None:
        self.bytes = 0
        self._seen: set[int] = set()

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self._seen:
            self._seen.add(storage.data_ptr())
            self.bytes += storage.nbytes()
        return tensor

    @staticmethod
    def unpack(tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_training_speed(cfg: GPTConfig, batch_size: int, seq_len: int, settings: SpeedSettings = SpeedSettings(),
                           *, device: torch.device | str = "cpu", steps: int = 4, warmup: int = 2, seed: int = 0
                           ) -> dict[str, float | None]:
    """Train a fresh GPT for ``warmup + steps`` steps with ``settings``; time the last ``steps``.

    Returns tokens per second (from the fastest timed step: the one least disturbed by other work on the
    machine), peak memory in MiB and the first step's seconds (which includes compiling, if any).
    """
    device = torch.device(device)
    real_vocab = cfg.vocab_size   # the data only ever holds real tokens; padding adds unused rows
    vocab = padded_vocab_size(real_vocab) if settings.pad_vocab else real_vocab
    cfg = replace(cfg, vocab_size=vocab, attention=settings.attention, dropout=0.0)
    torch.manual_seed(seed)
    model = GPT(cfg).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True if settings.fused_adamw else None)
    forward = torch.compile(model) if settings.compile else model
    batch = batch_size * settings.batch_multiplier
    generator = torch.Generator().manual_seed(seed)
    data = torch.randint(0, real_vocab, (batch, seq_len + 1), generator=generator).to(device)
    inputs, targets = data[:, :-1], data[:, 1:]
    dtype, needs_scaler = autocast_dtype_for(device)
    scaler = torch.amp.GradScaler(device.type, enabled=settings.autocast and needs_scaler)
    saved = SavedTensorBytes()

    def step(count_saved: bool) -> None:
        autocast = (torch.autocast(device.type, dtype=dtype) if settings.autocast else contextlib.nullcontext())
        with autocast, (saved.hooks() if count_saved else contextlib.nullcontext()):
            logits = forward(inputs)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    times = []
    with tf32_matmuls(settings.tf32 and device.type == "cuda"):
        for i in range(warmup + steps):
            if i == warmup and device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _synchronize(device)
            started = time.perf_counter()
            step(count_saved=device.type != "cuda" and i == warmup and not settings.compile)
            _synchronize(device)
            times.append(time.perf_counter() - started)
    if device.type == "cuda":
        peak: float | None = torch.cuda.max_memory_allocated(device) / MIB
    elif settings.compile:
        peak = None  # saved-tensor hooks do not see inside a compiled graph
    else:
        state = sum(p.numel() * p.element_size() for p in model.parameters()) * 4   # weights, grads, 2 moments
        peak = (state + saved.bytes) / MIB
    fastest = min(times[warmup:])   # the step least disturbed by whatever else the machine was doing
    return {"tokens_per_second": batch * seq_len / fastest, "peak_memory_mib": peak, "first_step_seconds": times[0]}


def sdpa_note(cfg: GPTConfig, seq_len: int, settings: SpeedSettings, device: torch.device) -> str:
    """The SDPA row's note: which kernel PyTorch runs for this model's attention, with these settings, here."""
    dtype = autocast_dtype_for(device)[0] if settings.autocast else torch.float32
    kernel = sdpa_kernel(device, dtype, cfg.n_head, cfg.n_embd // cfg.n_head, seq_len)
    where = f"{kernel} here" if kernel else "its kernel not reported by this torch"
    return f"F.scaled_dot_product_attention: {where}"


def run_ladder(cfg: GPTConfig, batch_size: int, seq_len: int, *, device: torch.device | str = "cpu",
               steps: int = 4, warmup: int = 2, compile_on_cpu: bool = False, rungs=RUNGS,
               slower_tolerance: float = 0.05, progress: bool = True) -> list[LadderRow]:
    """Measure every rung in order, each on top of the changes kept above it.

    A rung that does not apply says why; one that is more than ``slower_tolerance`` slower than the best
    configuration so far is reported and then dropped (``kept=False``) for the rows below.
    """
    device = torch.device(device)
    settings = SpeedSettings()
    rows: list[LadderRow] = []
    baseline = best = 0.0
    iterator: Any = rungs
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(rungs, desc="speed ladder", unit="row")
    for name, change, turn_on in iterator:
        reason = why_not(turn_on, device, cfg, compile_on_cpu=compile_on_cpu)
        if reason:
            rows.append(LadderRow(name, change, skipped=reason, settings=settings))
            continue
        trial = replace(settings, **turn_on)
        if turn_on.get("attention") == "sdpa":
            change = sdpa_note(cfg, seq_len, trial, device)
        measured = measure_training_speed(cfg, batch_size, seq_len, trial, device=device, steps=steps,
                                          warmup=warmup)
        speed = float(measured["tokens_per_second"] or 0.0)
        baseline = baseline or speed
        kept = not rows or speed >= best * (1 - slower_tolerance)
        if kept:
            settings, best = trial, max(best, speed)
        rows.append(LadderRow(name, change, tokens_per_second=speed, peak_memory_mib=measured["peak_memory_mib"],
                              first_step_seconds=measured["first_step_seconds"], speedup=speed / baseline,
                              kept=kept, settings=trial))
    return rows


# ----------------------------------------------------------------------------------------------- reporting
def memory_over_the_row_above(rows: Sequence[LadderRow], name: str) -> float | None:
    """Peak memory of the row ``name`` over that of the row it was measured on top of (the last kept one above).

    None when either was not measured (skipped, or no memory counter)."""
    index = next(i for i, row in enumerate(rows) if row.name == name)
    above = [row for row in rows[:index] if not row.skipped and row.kept]
    row = rows[index]
    if row.skipped or not above or not row.peak_memory_mib or not above[-1].peak_memory_mib:
        return None
    return row.peak_memory_mib / above[-1].peak_memory_mib


def ladder_table(rows: Sequence[LadderRow]) -> list[dict[str, Any]]:
    """Rows for :func:`course_utils.reporting.tables.records_table`: measured numbers, or why a row was skipped."""
    table = []
    for row in rows:
        if row.skipped:
            table.append({"row": row.name, "tokens/s": "-", "peak MiB": "-", "x baseline": "-",
                          "note": "not run: " + row.skipped})
        else:
            memory = f"{row.peak_memory_mib:,.1f}" if row.peak_memory_mib is not None else "n/a"
            note = row.change if row.kept else f"not kept (slower here): {row.change}"
            table.append({"row": row.name, "tokens/s": f"{row.tokens_per_second:,.0f}", "peak MiB": memory,
                          "x baseline": f"{row.speedup:.2f}", "note": note})
    return table


def lecture_ladder_table() -> list[dict[str, Any]]:
    """The lecture's table with each row's speed-up over its first row."""
    base = LECTURE_LADDER[0][1]
    return [{"row (lecture)": name, "tokens/s": f"{tps:,}", "reserved GB": memory, "x baseline": f"{tps / base:.2f}"}
            for name, tps, memory in LECTURE_LADDER]


def plot_ladder(rows: Sequence[LadderRow], title: str = "Speed ladder on this device"):
    """Speed-up over the baseline for each measured row, beside the lecture's A100 numbers."""
    from matplotlib.figure import Figure

    from course_utils.reporting.plots import enable_figure_display

    enable_figure_display()
    fig = Figure(figsize=(11, 3.6))
    ours, theirs = fig.subplots(1, 2)
    measured = [r for r in rows if not r.skipped]
    ours.barh([r.name for r in measured][::-1], [r.speedup for r in measured][::-1], color="#4c72b0")
    ours.axvline(1.0, color="k", lw=0.8)
    ours.set(xlabel="speed-up over the fp32 baseline", title=title)
    base = LECTURE_LADDER[0][1]
    theirs.barh([n for n, _, _ in LECTURE_LADDER][::-1], [t / base for _, t, _ in LECTURE_LADDER][::-1], color="#dd8452")
    theirs.axvline(1.0, color="k", lw=0.8)
    theirs.set(xlabel="speed-up over its baseline", title="The lecture's table (A100, claimed)")
    for ax in (ours, theirs):
        ax.grid(alpha=0.3, axis="x")
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return fig


def environment_line(device: torch.device | str) -> str:
    """Device, driver and torch version: what a measured table must be published with."""
    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        driver = "unknown"
        with contextlib.suppress(Exception):
            import subprocess

            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        return (f"{props.name} ({props.total_memory / 2**30:.0f} GiB), driver {driver}, CUDA {torch.version.cuda}, "
                f"torch {torch.__version__}")
    import os
    import platform

    return (f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads of "
            f"{os.cpu_count()} cores, torch {torch.__version__}")
