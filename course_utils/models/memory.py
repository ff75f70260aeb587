"""Will it fit? Bytes per parameter, training state, KV cache, and fit tables against this machine's memory.

The accounting, per parameter, in bytes:

* **Inference**: the weights in their storage format, plus the KV cache (keys and values of every past token, in
  every layer, kept in the compute dtype: fp32 for an fp32 model, 16-bit otherwise).
* **8-bit and 4-bit loading** (bitsandbytes, as transformers does it): only the linear layers inside the blocks
  are quantized; embeddings, norms, biases and the output layer stay 16-bit. NF4 stores 4 bits per weight plus
  one absmax constant per block of 64 weights; double quantization (QLoRA paper, Dettmers et al. 2023) stores
  those constants in 8 bits with one fp32 constant per 256 blocks.
* **Full fine-tuning with AdamW in mixed precision**: 16 bytes per parameter, split as in the ZeRO paper
  (Rajbhandari et al. 2020): 16-bit weights (2) + 16-bit gradients (2) + an fp32 master copy of the weights
  (4) + Adam's first and second moments in fp32 (4 + 4). With torch autocast (how this course trains) weights
  and gradients are fp32 and there is no separate master copy: 4 + 4 + 8, the same 16 bytes.
* **LoRA**: the frozen base in 16-bit (2 bytes, no gradient, no optimizer state) plus the adapters at the full
  training cost (fp32 weights, gradients and two Adam moments: 16 bytes per adapter parameter).
* **QLoRA**: as LoRA, with the base loaded in NF4 with double quantization.
* **Activations** (training only) are *estimated*, assuming gradient checkpointing (as memory-bound fine-tuning
  does): each layer's 16-bit input is kept (batch x context x hidden x 2 bytes per layer) plus the fp32 logits
  for the loss (batch x context x vocab x 4 bytes). This is a lower bound: the working memory of the layer being
  recomputed, attention workspace and the CUDA context are left to the headroom.

"Fits" means the total is at most ``(1 - headroom)`` of the memory this machine offers (see
:func:`course_utils.ground.machine.machine_memory`); the default headroom is 20 %.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from course_utils.ground.machine import MachineMemory
from course_utils.models.model_specs import (
    MODEL_SPECS,
    ModelSize,
    ModelSpec,
    get_spec,
    lora_adapter_params,
    model_size,
)
from course_utils.reporting.course_documents import EXAM_NOTES, MODULE_NOTEBOOK, WORKSHOP_GUIDE, cite
from course_utils.reporting.plots import new_figure
from course_utils.reporting.tables import format_cell, markdown_table

GIB = 2**30
GB = 10**9
DEFAULT_HEADROOM = 0.2


# ---------------------------------------------------------------------------------------------------------------
# Bits and bytes per parameter


def nf4_bits_per_param(block_size: int = 64, *, double_quant: bool = False, absmax_bits: int = 32,
                       dq_bits: int = 8, dq_block_size: int = 256) -> float:
    """Bits per weight of NF4: 4 bits plus the share of the per-block absmax constant.

    Without double quantization each block of ``block_size`` weights has one ``absmax_bits`` constant. With it,
    those constants are stored in ``dq_bits`` and each group of ``dq_block_size`` of them has one fp32 constant.
    """
    if block_size < 1 or dq_block_size < 1:
        raise ValueError(f"block sizes must be positive, got {block_size} and {dq_block_size}")
    if not double_quant:
        return 4 + absmax_bits / block_size
    return 4 + dq_bits / block_size + 32 / (block_size * dq_block_size)


BITS_PER_PARAM: dict[str, float] = {
    "fp32": 32,
    "bf16": 16,
    "fp16": 16,
    # LLM.int8() also keeps one fp32 scale per output row: 32 / d_in bits more, under 0.01 bit for d_in = 4096.
    "int8": 8,
    "nf4": nf4_bits_per_param(64),
    "nf4+dq": nf4_bits_per_param(64, double_quant=True),
}


def bytes_per_param(fmt: str | float) -> float:
    """Bytes per parameter of a storage format (``"fp32"``, ``"bf16"``, ``"fp16"``, ``"int8"``, ``"nf4"``,
    ``"nf4+dq"``) or of a number of bits."""
    if isinstance(fmt, (int, float)) and not isinstance(fmt, bool):
        return float(fmt) / 8
    try:
        return BITS_PER_PARAM[str(fmt).lower()] / 8
    except KeyError:
        raise KeyError(f"Unknown format {fmt!r}; use one of {', '.join(BITS_PER_PARAM)} or a number of bits.") from None


def weights_bytes(n_params: float, fmt: str | float) -> float:
    """Bytes to store ``n_params`` weights in ``fmt`` (a format name or bits per weight)."""
    return n_params * bytes_per_param(fmt)


def weights_gib(n_params: float, bits: float) -> float:
    """GiB (2**30 bytes) to store ``n_params`` weights of ``bits`` bits each."""
    return n_params * bits / 8 / GIB


def kv_cache_bytes(n_layers: int, n_kv_heads: int, head_dim: int, context: int, batch: int = 1,
                   bytes_per_value: float = 2) -> float:
    """KV cache size: a key and a value vector per layer, per key/value head, per token, per sequence."""
    return 2 * n_layers * n_kv_heads * head_dim * context * batch * bytes_per_value


def model_kv_cache_bytes(model: str | ModelSpec, context: int, batch: int = 1, bytes_per_value: float = 2) -> float:
    """:func:`kv_cache_bytes` with the geometry of a known model."""
    size = model_size(model)
    return kv_cache_bytes(size.n_layers, size.n_kv_heads, size.head_dim, context, batch, bytes_per_value)


# Bytes per trainable parameter, split into (weights, gradients, optimizer state); both sum to 16 (module docstring).
ADAMW_MIXED_PRECISION = (2, 2, 12)
ADAPTER_TRAINING = (4, 4, 8)


def activation_bytes_estimate(size: ModelSize, context: int, batch: int) -> float:
    """Training activations with gradient checkpointing: a lower bound (see the module docstring)."""
    return batch * context * (size.n_layers * size.hidden_size * 2 + size.vocab_size * 4)


# ---------------------------------------------------------------------------------------------------------------
# Breakdown per method


@dataclass(frozen=True)
class Breakdown:
    """Bytes of each part of one model run with one method."""

    weights: float = 0
    gradients: float = 0
    optimizer: float = 0
    kv_cache: float = 0
    activations: float = 0

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.kv_cache + self.activations

    def parts(self) -> dict[str, float]:
        """The parts by name, in plotting order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _quantized_weights(size: ModelSize, fmt: str) -> float:
    return weights_bytes(size.block_linear_params, fmt) + weights_bytes(size.other_params, "bf16")


def _inference(fmt: str, kv_bytes: float) -> Callable[..., Breakdown]:
    def method(size: ModelSize, spec: ModelSpec, context: int, batch: int, lora_r: int) -> Breakdown:
        weights = weights_bytes(size.total_params, fmt) if fmt in ("fp32", "bf16") else _quantized_weights(size, fmt)
        kv = kv_cache_bytes(size.n_layers, size.n_kv_heads, size.head_dim, context, batch, kv_bytes)
        return Breakdown(weights=weights, kv_cache=kv)
    return method


def _full_finetune(size: ModelSize, spec: ModelSpec, context: int, batch: int, lora_r: int) -> Breakdown:
    w, g, o = ADAMW_MIXED_PRECISION
    n = size.total_params
    return Breakdown(weights=n * w, gradients=n * g, optimizer=n * o,
                     activations=activation_bytes_estimate(size, context, batch))


def _adapters(base: Callable[[ModelSize], float]) -> Callable[..., Breakdown]:
    def method(size: ModelSize, spec: ModelSpec, context: int, batch: int, lora_r: int) -> Breakdown:
        n = lora_adapter_params(spec, lora_r)
        w, g, o = ADAPTER_TRAINING
        return Breakdown(weights=base(size) + n * w, gradients=n * g, optimizer=n * o,
                         activations=activation_bytes_estimate(size, context, batch))
    return method


METHODS: dict[str, Callable[..., Breakdown]] = {
    "inference fp32": _inference("fp32", 4),
    "inference 16-bit": _inference("bf16", 2),
    "inference int8": _inference("int8", 2),
    "inference nf4": _inference("nf4+dq", 2),
    "full fine-tune": _full_finetune,
    "LoRA": _adapters(lambda size: weights_bytes(size.total_params, "bf16")),
    "QLoRA": _adapters(lambda size: _quantized_weights(size, "nf4+dq")),
}
METHOD_NOTES: dict[str, str] = {
    "inference fp32": "fp32 weights, fp32 KV cache",
    "inference 16-bit": "bf16/fp16 weights, 16-bit KV cache",
    "inference int8": "bitsandbytes 8-bit linear layers, the rest 16-bit",
    "inference nf4": "NF4 + double quantization linear layers, the rest 16-bit",
    "full fine-tune": "AdamW, mixed precision: 16 bytes per parameter + activations (est.)",
    "LoRA": "16-bit frozen base + adapters at 16 bytes per parameter + activations (est.)",
    "QLoRA": "NF4 frozen base + adapters at 16 bytes per parameter + activations (est.)",
}


def breakdown(model: str | ModelSpec, method: str, *, context: int = 4096, batch: int = 1,
              lora_r: int = 16) -> Breakdown:
    """Bytes needed by ``model`` with ``method`` (a key of :data:`METHODS`) at this context and batch size."""
    if method not in METHODS:
        raise KeyError(f"Unknown method {method!r}; use one of {', '.join(METHODS)}.")
    if context < 1 or batch < 1:
        raise ValueError(f"context and batch must be at least 1, got context={context}, batch={batch}")
    spec = get_spec(model)
    return METHODS[method](model_size(spec), spec, context, batch, lora_r)


# ---------------------------------------------------------------------------------------------------------------
# Fit tables


def _memory_bytes(memory: int | float | MachineMemory | None) -> tuple[float, str]:
    if memory is None:
        from course_utils.ground.machine import machine_memory

        memory = machine_memory()
    if isinstance(memory, MachineMemory):
        return float(memory.usable_bytes), f"{memory.name}, {memory.basis}"
    if memory <= 0:
        raise ValueError(f"memory must be a positive number of bytes, got {memory!r}")
    return float(memory), "given"


@dataclass(frozen=True)
class FitRow:
    """One model with one method against a memory budget."""

    model: str
    method: str
    breakdown: Breakdown
    budget_bytes: float

    @property
    def fits(self) -> bool:
        return self.breakdown.total <= self.budget_bytes

    def as_dict(self) -> dict[str, Any]:
        parts = {f"{k} GiB": round(v / GIB, 2) for k, v in self.breakdown.parts().items()}
        return {"model": self.model, "method": self.method, **parts,
                "total GiB": round(self.breakdown.total / GIB, 2), "fits": self.fits}


@dataclass(frozen=True, repr=False)
class FitTable:
    """Fit verdicts for models x methods; shows as a grid (text, markdown or HTML), with details per model."""

    rows: tuple[FitRow, ...]
    memory_bytes: float
    headroom: float
    memory_label: str
    context: int
    batch: int
    lora_r: int
    models: tuple[str, ...] = field(default=())
    methods: tuple[str, ...] = field(default=())

    @property
    def budget_bytes(self) -> float:
        return self.memory_bytes * (1 - self.headroom)

    def row(self, model: str, method: str) -> FitRow:
        for row in self.rows:
            if row.model == model and row.method == method:
                return row
        raise KeyError(f"No row for {model!r} with {method!r}")

    def as_dicts(self) -> list[dict[str, Any]]:
        """One plain dict per model and method, all parts in GiB."""
        return [row.as_dict() for row in self.rows]

    def caption(self) -> str:
        return (f"Memory: {self.memory_bytes / GIB:.1f} GiB ({self.memory_label}); budget after "
                f"{self.headroom:.0%} headroom: {self.budget_bytes / GIB:.1f} GiB. Context {self.context}, "
                f"batch {self.batch}, LoRA rank {self.lora_r}; GiB, yes = fits.")

    def grid(self) -> tuple[list[str], list[list[str]]]:
        """Headers and cells of the model x method grid (``"12.6 yes"``)."""
        headers = ["model", *self.methods]
        cells = []
        for model in self.models:
            line = [model]
            for method in self.methods:
                row = self.row(model, method)
                line.append(f"{row.breakdown.total / GIB:.1f} {'yes' if row.fits else 'NO'}")
            cells.append(line)
        return headers, cells

    def to_markdown(self) -> str:
        headers, cells = self.grid()
        return markdown_table(headers, cells) + "\n\n" + self.caption()

    def __str__(self) -> str:
        return self.to_markdown()

    __repr__ = __str__  # the plain-text view of a notebook shows the table

    def _repr_html_(self) -> str:
        headers, _ = self.grid()
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = []
        for model in self.models:
            tds = [f"<td style='text-align:left'><b>{html.escape(model)}</b></td>"]
            for method in self.methods:
                row = self.row(model, method)
                color = "#d9f2d9" if row.fits else "#f8d7d7"
                tds.append(f"<td style='background:{color};text-align:right' title='{html.escape(METHOD_NOTES[method])}'>"
                           f"{row.breakdown.total / GIB:.1f} {'&#10003;' if row.fits else '&#10007;'}</td>")
            body.append("<tr>" + "".join(tds) + "</tr>")
        return (f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
                f"<p style='font-size:smaller'>{html.escape(self.caption())}</p>")

    def details(self, model: str) -> str:
        """A markdown table of every part for one model, one row per method."""
        rows = [row.as_dict() for row in self.rows if row.model == model]
        if not rows:
            raise KeyError(f"{model!r} is not in this table; it has {', '.join(self.models)}")
        headers = [h for h in rows[0] if h != "model"]
        cells = [[format_cell(r[h]) for h in headers] for r in rows]
        return markdown_table(headers, cells) + "\n\n" + self.caption()


def fit_table(models: Sequence[str] | None = None, methods: Sequence[str] | None = None, *,
              memory: int | float | MachineMemory | None = None, headroom: float = DEFAULT_HEADROOM,
              context: int = 4096, batch: int = 1, lora_r: int = 16) -> FitTable:
    """Does each model fit with each method? ``memory`` defaults to this machine's (see the module docstring)."""
    if not 0 <= headroom < 1:
        raise ValueError(f"headroom is a fraction of memory kept free, between 0 and 1; got {headroom!r}")
    models = tuple(models or MODEL_SPECS)
    methods = tuple(methods or METHODS)
    memory_bytes, label = _memory_bytes(memory)
    budget = memory_bytes * (1 - headroom)
    rows = tuple(FitRow(m, meth, breakdown(m, meth, context=context, batch=batch, lora_r=lora_r), budget)
                 for m in models for meth in methods)
    return FitTable(rows, memory_bytes, headroom, label, context, batch, lora_r, models, methods)


# ---------------------------------------------------------------------------------------------------------------
# Tables of facts and the course documents' claims


FORMAT_LAYOUT: dict[str, str] = {
    "fp32": "1 sign, 8 exponent, 23 mantissa bits",
    "bf16": "1 sign, 8 exponent, 7 mantissa bits (fp32's range)",
    "fp16": "1 sign, 5 exponent, 10 mantissa bits",
    "int8": "8-bit integer + a per-row scale (not counted)",
    "nf4": "4-bit code + fp32 absmax per block of 64: 4 + 32/64",
    "nf4+dq": "4-bit code + 8-bit absmax per block of 64 + fp32 per 256 blocks: 4 + 8/64 + 32/(64*256)",
}


def bits_table() -> str:
    """Bits and bytes per parameter of each storage format, with its layout, as a markdown table."""
    rows = [[fmt, f"{bits:.6g}", f"{bits / 8:.6g}", FORMAT_LAYOUT[fmt]] for fmt, bits in BITS_PER_PARAM.items()]
    return markdown_table(["format", "bits/param", "bytes/param", "layout"], rows)


def training_bytes_table() -> str:
    """Bytes per trainable parameter for full fine-tuning and for adapters, part by part."""
    rows = [["full fine-tune (ZeRO split)", *ADAMW_MIXED_PRECISION, sum(ADAMW_MIXED_PRECISION)],
            ["LoRA/QLoRA adapter (fp32)", *ADAPTER_TRAINING, sum(ADAPTER_TRAINING)],
            ["frozen 16-bit base", 2, 0, 0, 2],
            ["frozen NF4+dq base", f"{BITS_PER_PARAM['nf4+dq'] / 8:.4f}", 0, 0,
             f"{BITS_PER_PARAM['nf4+dq'] / 8:.4f}"]]
    return markdown_table(["parameter kind", "weights", "gradients", "optimizer", "total bytes"], rows)


@dataclass(frozen=True)
class Claim:
    """A memory figure stated in a course document, and how to compute it for a real model."""

    source: str
    statement: str
    model: str
    method: str  # a key of METHODS, or "weights:<fmt>" for the weights alone, or "adapters" for LoRA state only


# Figures as the course documents state them (paraphrased), each with the document that states it.
DOCUMENT_CLAIMS: tuple[Claim, ...] = (
    Claim(cite(MODULE_NOTEBOOK, WORKSHOP_GUIDE), "7B in fp32: 28 GB", "Llama-2-7B", "weights:fp32"),
    Claim(cite(MODULE_NOTEBOOK, WORKSHOP_GUIDE), "7B in fp16: 14 GB", "Llama-2-7B", "weights:bf16"),
    Claim(EXAM_NOTES, "Llama-2-7b model.safetensors: 13.48 GB", "Llama-2-7B", "weights:bf16"),
    Claim(WORKSHOP_GUIDE, "7B in int8: 7 GB (7-8 GB in practice)", "Llama-2-7B", "inference int8"),
    Claim(MODULE_NOTEBOOK, "7B in int4: 3.5 GB", "Llama-2-7B", "weights:4"),
    Claim(cite(MODULE_NOTEBOOK, WORKSHOP_GUIDE), "7B in 4-bit / QLoRA (NF4): about 3-4 GB", "Llama-2-7B", "weights:nf4+dq as loaded"),
    Claim(WORKSHOP_GUIDE, "7B full fine-tuning: 28 GB", "Llama-2-7B", "full fine-tune"),
    Claim(WORKSHOP_GUIDE, "7B LoRA r=16: about 1 GB", "Llama-2-7B", "adapters"),
    Claim(WORKSHOP_GUIDE, "Qwen2.5-0.5B in fp16: about 1 GB", "Qwen2.5-0.5B", "weights:bf16"),
    Claim(WORKSHOP_GUIDE, "Qwen2.5-0.5B with QLoRA: about 0.5 GB", "Qwen2.5-0.5B", "weights:nf4+dq as loaded"),
    Claim(WORKSHOP_GUIDE, "Llama-3.2-1B in fp16: about 2 GB", "Llama-3.2-1B", "weights:bf16"),
    Claim(WORKSHOP_GUIDE, "Llama-3.2-1B with QLoRA: about 1 GB", "Llama-3.2-1B", "weights:nf4+dq as loaded"),
)


def claim_value(claim: Claim, *, context: int = 4096, batch: int = 1, lora_r: int = 16) -> tuple[float, str]:
    """(bytes, what was computed) for a claim, on the real model's parameter count."""
    size = model_size(claim.model)
    if claim.method == "adapters":
        n = lora_adapter_params(claim.model, lora_r)
        return n * sum(ADAPTER_TRAINING), f"{n:,} adapter params (r={lora_r}) x 16 B"
    if claim.method == "weights:nf4+dq as loaded":
        return _quantized_weights(size, "nf4+dq"), "NF4+dq linear layers, rest 16-bit"
    if claim.method.startswith("weights:"):
        fmt = claim.method.split(":", 1)[1]
        fmt_value: str | float = float(fmt) if fmt.replace(".", "").isdigit() else fmt
        label = f"{fmt} bits" if isinstance(fmt_value, float) else fmt
        return weights_bytes(size.total_params, fmt_value), f"all {size.total_params:,} params in {label}"
    value = breakdown(claim.model, claim.method, context=context, batch=batch, lora_r=lora_r)
    if claim.method == "full fine-tune":
        return value.total - value.activations, "weights + grads + AdamW states (no activations)"
    return value.weights, METHOD_NOTES[claim.method]


def claims_table(claims: Sequence[Claim] = DOCUMENT_CLAIMS) -> str:
    """The documents' figures beside the computed ones (GB = 10**9 bytes, as the documents count), as a markdown table."""
    rows = []
    for claim in claims:
        value, how = claim_value(claim)
        rows.append([claim.source, claim.statement, claim.model, f"{value / GB:.2f}", f"{value / GIB:.2f}", how])
    return markdown_table(["source", "claim", "computed for", "GB", "GiB", "computed as"], rows)


def kv_table(models: Sequence[str], contexts: Sequence[int], batch: int = 1, bytes_per_value: float = 2) -> str:
    """KV cache GiB per model (rows) and context length (columns), as a markdown table."""
    headers = ["model", "attention", *(f"{c:,} tok" for c in contexts)]
    rows = []
    for name in models:
        size = model_size(name)
        rows.append([name, f"{size.attention} ({size.n_kv_heads} kv)",
                     *(f"{model_kv_cache_bytes(name, c, batch, bytes_per_value) / GIB:.2f}" for c in contexts)])
    return markdown_table(headers, rows)


# ---------------------------------------------------------------------------------------------------------------
# Plots

PART_COLORS = {"weights": "#4c72b0", "gradients": "#dd8452", "optimizer": "#c44e52", "kv_cache": "#55a868",
               "activations": "#8172b3"}


def plot_breakdown(models: Sequence[str], *, memory: int | float | MachineMemory | None = None,
                   headroom: float = DEFAULT_HEADROOM, context: int = 4096, batch: int = 1, lora_r: int = 16,
                   methods: Sequence[str] | None = None, log: bool = False) -> Any:
    """Stacked bars of each part per method, one panel per model, against this machine's memory; a Figure."""
    table = fit_table(models, methods, memory=memory, headroom=headroom, context=context, batch=batch,
                      lora_r=lora_r)
    fig = new_figure(figsize=(4.6 * len(table.models), 4.2), layout="constrained")
    axes = fig.subplots(1, len(table.models), squeeze=False)[0]
    for ax, model in zip(axes, table.models):
        bottoms = [0.0] * len(table.methods)
        for part, color in PART_COLORS.items():
            heights = [getattr(table.row(model, m).breakdown, part) / GIB for m in table.methods]
            ax.bar(range(len(table.methods)), heights, bottom=bottoms, color=color, label=part.replace("_", " "))
            bottoms = [b + h for b, h in zip(bottoms, heights)]
        for x, method in enumerate(table.methods):
            row = table.row(model, method)
            ax.annotate(f"{row.breakdown.total / GIB:.1f}", (x, row.breakdown.total / GIB), ha="center",
                        va="bottom", fontsize=7, color="#1a7f37" if row.fits else "#b42318")
        ax.axhline(table.memory_bytes / GIB, color="black", lw=1.5, label="this machine")
        ax.axhline(table.budget_bytes / GIB, color="black", lw=1, ls="--", label=f"minus {headroom:.0%} headroom")
        ax.set_xticks(range(len(table.methods)), [m.replace("inference ", "infer. ") for m in table.methods],
                      rotation=40, ha="right", fontsize=8)
        ax.set_title(f"{model} ({model_size(model).total_params / 1e9:.2f} B params)", fontsize=10)
        ax.set_ylabel("GiB")
        if log:
            ax.set_yscale("log")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"What each method needs (context {context}, batch {batch}, LoRA r={lora_r})", fontsize=11)
    return fig


def plot_kv_growth(models: Sequence[str], max_context: int = 32768, *, batch: int = 1,
                   bytes_per_value: float = 2) -> Any:
    """KV cache GiB against context per model (dashed beyond the model's trained context), with its 16-bit weights."""
    fig = new_figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.subplots()
    for index, name in enumerate(models):
        size = model_size(name)
        color = f"C{index}"
        trained = min(size.max_context, max_context)
        for start, stop, style, label in (
                (0, trained, "-", f"{name} KV cache ({size.attention}, {size.n_kv_heads} kv heads)"),
                (trained, max_context, "--", None)):
            if stop > start:
                ax.plot([start, stop], [model_kv_cache_bytes(name, c, batch, bytes_per_value) / GIB
                                        for c in (start, stop)], color=color, ls=style, label=label)
        ax.axhline(weights_bytes(size.total_params, "bf16") / GIB, color=color, ls=":", lw=1,
                   label=f"{name} weights, 16-bit")
    ax.set_xlabel("context length (tokens); dashed: beyond the context the model was trained for")
    ax.set_ylabel("GiB")
    ax.set_title(f"KV cache grows linearly with context (batch {batch}, {bytes_per_value:g} bytes per value)",
                 fontsize=10)
    ax.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------------------------------
# Interactive explorer


def _static_view(model: str, context: int, batch: int, lora_r: int, memory: Any, headroom: float) -> str:
    table = fit_table([model], memory=memory, headroom=headroom, context=context, batch=batch, lora_r=lora_r)
    return f"{model}:\n" + table.details(model)


def fit_explorer(model: str = "Llama-3-8B", *, context: int = 4096, batch: int = 1, lora_r: int = 16,
                 memory: int | float | MachineMemory | None = None, headroom: float = DEFAULT_HEADROOM) -> Any:
    """Widgets to pick model, context, batch and LoRA rank, updating a table and a plot.

    Returns the widget: make it the last line of a cell to show it. Where widgets cannot render (papermill, CI,
    GitHub) its plain-text form is the table for the starting settings; without ipywidgets or outside IPython
    the table is printed and None is returned.
    """
    memory_value = memory
    if memory_value is None:
        from course_utils.ground.machine import machine_memory

        memory_value = machine_memory()
    static = _static_view(model, context, batch, lora_r, memory_value, headroom)
    try:
        import ipywidgets as widgets
        from IPython import get_ipython
        from IPython.display import HTML, display
    except ImportError:
        print(static)
        return None
    if get_ipython() is None:
        print(static)
        return None

    class _Explorer(widgets.VBox):
        def __repr__(self) -> str:  # what a viewer without widget support shows
            return static

    style = {"description_width": "110px"}
    model_box = widgets.Dropdown(options=list(MODEL_SPECS), value=model, description="model", style=style)
    contexts = [2**k for k in range(9, 18)]
    context_box = widgets.SelectionSlider(options=contexts, value=min(contexts, key=lambda c: abs(c - context)),
                                          description="context", style=style)
    batch_box = widgets.IntSlider(value=batch, min=1, max=64, description="batch size", style=style)
    rank_box = widgets.Dropdown(options=[4, 8, 16, 32, 64, 128, 256], value=lora_r, description="LoRA rank",
                                style=style)
    out = widgets.Output()

    def update(_: Any = None) -> None:
        chosen = model_box.value
        table = fit_table([chosen], memory=memory_value, headroom=headroom, context=context_box.value,
                          batch=batch_box.value, lora_r=rank_box.value)
        fig = plot_breakdown([chosen], memory=memory_value, headroom=headroom, context=context_box.value,
                             batch=batch_box.value, lora_r=rank_box.value)
        with out:
            out.clear_output(wait=True)
            display(HTML(_details_html(table, chosen)))
            display(fig)

    for box in (model_box, context_box, batch_box, rank_box):
        box.observe(update, names="value")
    update()
    return _Explorer([widgets.HBox([model_box, rank_box]), widgets.HBox([context_box, batch_box]), out])


def _details_html(table: FitTable, model: str) -> str:
    rows = [row for row in table.rows if row.model == model]
    headers = ["method", *(p.replace("_", " ") for p in PART_COLORS), "total", "fits"]
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = []
    for row in rows:
        parts = "".join(f"<td style='text-align:right'>{v / GIB:.2f}</td>" for v in row.breakdown.parts().values())
        color = "#d9f2d9" if row.fits else "#f8d7d7"
        body.append(f"<tr><td style='text-align:left'>{html.escape(row.method)}</td>{parts}"
                    f"<td style='text-align:right'><b>{row.breakdown.total / GIB:.2f}</b></td>"
                    f"<td style='background:{color}'>{'yes' if row.fits else 'no'}</td></tr>")
    return (f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"<p style='font-size:smaller'>GiB. {html.escape(table.caption())}</p>")
