"""4-bit quantization by hand: NF4's 16 levels from normal quantiles, block-wise absmax, and a uniform 4-bit grid.

Block-wise absmax quantization (as bitsandbytes does it): cut the flattened tensor into blocks of ``block_size``
values, divide each block by its largest absolute value (its *absmax*, kept in fp32) so that it lies in
[-1, 1], and store for every value the index (0..15) of the nearest of 16 levels. Dequantizing multiplies the
level by the block's absmax. Only the choice of the 16 levels differs between the formats compared here:

* **NF4** (NormalFloat, QLoRA paper, Dettmers et al. 2023): levels at quantiles of the standard normal
  distribution, so that every level is used about equally often by normally distributed weights, with an exact
  zero. Eight levels are positive and seven negative (plus zero), because 16 is even.
* **uniform int4**: 16 evenly spaced levels from -1 to 1, the plain integer grid scaled by the absmax.
* **FP4**: bitsandbytes' 4-bit float (1 sign, 2 exponent, 1 mantissa bit), for reference.

The bits each format costs per weight, with and without double quantization, come from
:func:`course_utils.models.memory.nf4_bits_per_param`; :func:`bnb_storage_bits` measures the same on the tensors
bitsandbytes really stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from course_utils.models import memory
from course_utils.reporting import plots

N_LEVELS = 16  # 4 bits


def nf4_offset(n_levels: int = N_LEVELS) -> float:
    """The outermost probability at which NF4 takes a normal quantile.

    The quantile at probability 1 is infinite, so the grid stops short of it: halfway between ``1 - 1/(2*15)`` and
    ``1 - 1/(2*16)``, the centres of the last bin of a 15- and a 16-bin split of [0, 1]. (0.9677 for 4 bits.)
    """
    return 0.5 * ((1 - 1 / (2 * (n_levels - 1))) + (1 - 1 / (2 * n_levels)))


def nf4_levels(n_levels: int = N_LEVELS) -> torch.Tensor:
    """The NF4 code book: normal quantiles, normalised to [-1, 1], with an exact zero (float32, ascending).

    Positive side: ``n/2`` quantiles at probabilities evenly spaced from 0.5 (excluded) to the offset. Negative
    side: ``n/2 - 1`` quantiles the same way, mirrored. Then zero, and everything divided by the largest value.
    """
    half = n_levels // 2
    top = nf4_offset(n_levels)
    positive = torch.special.ndtri(torch.linspace(0.5, top, half + 1, dtype=torch.float64)[1:])
    negative = -torch.special.ndtri(torch.linspace(0.5, top, half, dtype=torch.float64)[1:])
    levels = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive]).sort().values
    return (levels / levels.abs().max()).to(torch.float32)


def uniform_levels(n_levels: int = N_LEVELS) -> torch.Tensor:
    """``n_levels`` evenly spaced values from -1 to 1: uniform (integer) 4-bit quantization after absmax scaling."""
    return torch.linspace(-1.0, 1.0, n_levels, dtype=torch.float32)


def bnb_levels(quant_type: str = "nf4") -> torch.Tensor:
    """bitsandbytes' own 16-value table for ``"nf4"`` or ``"fp4"`` (on the CPU), ascending."""
    from bitsandbytes.functional import get_4bit_type

    return get_4bit_type(quant_type, device="cpu").float().sort().values


def codebooks() -> dict[str, torch.Tensor]:
    """The three 4-bit code books compared in the notebook, by name."""
    return {"NF4": nf4_levels(), "uniform int4": uniform_levels(), "FP4 (bitsandbytes)": bnb_levels("fp4")}


# ------------------------------------------------------------------------------------------------ block-wise absmax
@dataclass(frozen=True)
class Quantized:
    """A tensor quantized block-wise: one code (0..15) per value, one fp32 absmax per block."""

    codes: torch.Tensor  # uint8, one per value (a real format packs two per byte)
    absmax: torch.Tensor  # float32, one per block
    levels: torch.Tensor  # the 16-value code book
    shape: tuple[int, ...]
    block_size: int

    def bits_per_value(self, absmax_bits: int = 32) -> float:
        """4 bits per code plus each block's share of its absmax constant."""
        return memory.nf4_bits_per_param(self.block_size, absmax_bits=absmax_bits)


def _blocks(x: torch.Tensor, block_size: int) -> torch.Tensor:
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    flat = x.detach().reshape(-1).float()
    pad = (-flat.numel()) % block_size
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.view(-1, block_size)


def quantize_blockwise(x: torch.Tensor, levels: torch.Tensor | None = None, block_size: int = 64) -> Quantized:
    """Quantize ``x`` to the nearest of ``levels`` (default NF4) after dividing each block by its absmax."""
    levels = nf4_levels() if levels is None else levels.float()
    blocks = _blocks(x, block_size)
    absmax = blocks.abs().amax(dim=1)
    scaled = blocks / absmax.clamp_min(torch.finfo(torch.float32).tiny)[:, None]
    codes = (scaled[..., None] - levels).abs().argmin(dim=-1).to(torch.uint8)
    return Quantized(codes.reshape(-1)[: x.numel()], absmax, levels, tuple(x.shape), block_size)


def dequantize_blockwise(q: Quantized) -> torch.Tensor:
    """Back to float32: each code's level times its block's absmax, in the original shape."""
    n = q.codes.numel()
    pad = (-n) % q.block_size
    codes = torch.cat([q.codes, q.codes.new_zeros(pad)]) if pad else q.codes
    values = q.levels[codes.long()].view(-1, q.block_size) * q.absmax[:, None]
    return values.reshape(-1)[:n].reshape(q.shape)


def roundtrip(x: torch.Tensor, levels: torch.Tensor | None = None, block_size: int = 64) -> torch.Tensor:
    """``dequantize_blockwise(quantize_blockwise(x, levels, block_size))``."""
    return dequantize_blockwise(quantize_blockwise(x, levels, block_size))


def roundtrip_errors(x: torch.Tensor, block_size: int = 64,
                     books: dict[str, torch.Tensor] | None = None) -> list[dict[str, object]]:
    """Mean squared and mean absolute round-trip error of ``x`` for each code book (default :func:`codebooks`)."""
    rows: list[dict[str, object]] = []
    reference = x.detach().float()
    power = reference.pow(2).mean().item()
    for name, levels in (books or codebooks()).items():
        error = roundtrip(reference, levels, block_size) - reference
        mse = error.pow(2).mean().item()
        rows.append({"format": name, "mean squared error": mse, "mean abs error": error.abs().mean().item(),
                     "error / signal": f"{mse / power:.2%}"})
    return rows


def code_usage(x: torch.Tensor, levels: torch.Tensor, block_size: int = 64) -> torch.Tensor:
    """How often each of the 16 codes is used for ``x`` (a fraction per code)."""
    codes = quantize_blockwise(x, levels, block_size).codes.long()
    return torch.bincount(codes, minlength=levels.numel()).float() / codes.numel()


# ------------------------------------------------------------------------------------------------ bitsandbytes
def bnb_roundtrip(x: torch.Tensor, quant_type: str = "nf4", block_size: int = 64,
                  double_quant: bool = False) -> torch.Tensor:
    """Quantize and dequantize ``x`` with bitsandbytes itself (its CPU path here, its CUDA kernels on a GPU)."""
    from bitsandbytes.functional import dequantize_4bit, quantize_4bit

    packed, state = quantize_4bit(x.detach().float().contiguous(), blocksize=block_size, quant_type=quant_type,
                                  compress_statistics=double_quant)
    return dequantize_4bit(packed, state).reshape(x.shape)


def dequantize_bnb_layer(layer: torch.nn.Module) -> torch.Tensor:
    """The float32 weight of a bitsandbytes ``Linear4bit``, whatever layout its CPU kernel left it in.

    On CPUs with AVX-512 BF16, an eval-mode forward repacks the 4-bit weight in place for a fused kernel, so
    ``weight.data`` is then not the layout ``dequantize_4bit`` reads. The layer's ``state_dict`` always holds the
    canonical layout (it is what ``save_pretrained`` writes), so the weight is read from there.
    """
    from bitsandbytes.functional import QuantState, dequantize_4bit

    state = layer.state_dict()
    prefix = "weight."
    quant_state = QuantState.from_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)},
                                       device=state["weight"].device)
    return dequantize_4bit(state["weight"], quant_state).float().cpu()


def bnb_storage_bits(x: torch.Tensor, block_size: int = 64, double_quant: bool = False) -> dict[str, float]:
    """Bits per weight of what bitsandbytes stores for ``x`` in NF4, counted from its tensors.

    Counted: the packed 4-bit codes, the per-block absmax (fp32, or 8-bit with double quantization) and, with
    double quantization, the second-level fp32 absmax and offset. Not counted: the two fixed look-up tables
    (16 and 256 values), which are the same for every tensor.
    """
    from bitsandbytes.functional import quantize_4bit

    packed, state = quantize_4bit(x.detach().float().contiguous(), blocksize=block_size, quant_type="nf4",
                                  compress_statistics=double_quant)
    n = x.numel()
    bits = {"codes": packed.numel() * packed.element_size() * 8 / n,
            "absmax": state.absmax.numel() * state.absmax.element_size() * 8 / n,
            "second level": 0.0}
    if state.nested:  # fp32 absmax of each group of dq_block_size absmax values, and one fp32 offset per tensor
        second = state.state2.absmax
        bits["second level"] = (second.numel() * second.element_size() * 8 + 32) / n
    bits["total"] = bits["codes"] + bits["absmax"] + bits["second level"]
    bits["formula"] = memory.nf4_bits_per_param(block_size, double_quant=double_quant)
    return bits


# bitsandbytes picks its 4-bit CPU kernel by CPU: with AVX-512 BF16 it repacks each weight for a fused kernel that
# multiplies in bf16, in eval mode and without gradients; elsewhere (and in training) it dequantizes, then multiplies
# in the layer's compute dtype. Figures measured through the two differ by bf16 rounding.
PACKED_CPU_KERNEL = "packed AVX-512 BF16 kernel (inference only; activations rounded to bf16)"
GENERIC_CPU_KERNEL = "generic kernel (dequantize to the compute dtype, then multiply)"


def bnb_packed_cpu_kernel() -> tuple[bool, str]:
    """Whether bitsandbytes' packed 4-bit CPU kernel can run on this machine, and why (or why not)."""
    # The function Linear4bit itself consults when a layer is made (so an override of it, as `make test-other-cpu`
    # installs, is what this reports too).
    from bitsandbytes.nn import modules

    if modules.has_avx512bf16():
        return True, "this CPU has AVX-512 BF16, and bitsandbytes' native library has the kernel"
    return False, "bitsandbytes sees no AVX-512 BF16 on this CPU (or its native library lacks the kernel)"


def bnb_cpu_kernel(model: torch.nn.Module) -> str:
    """Which of bitsandbytes' CPU kernels the model's 4-bit layers use when they run inference on the CPU."""
    from bitsandbytes.nn import Linear4bit

    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    if not layers:
        return "no 4-bit layers"
    packed = sum(bool(getattr(m, "support_avx512bf16_for_cpu", False)) for m in layers)
    if packed == len(layers):
        return PACKED_CPU_KERNEL
    return GENERIC_CPU_KERNEL if packed == 0 else f"mixed: {packed} of {len(layers)} layers packed"


def bnb_path(model_or_device: Any = "cpu") -> str:
    """Which bitsandbytes code runs the 4-bit layers here: its CUDA kernels, or which kernel of its CPU backend."""
    import bitsandbytes
    from bitsandbytes import cextension

    if isinstance(model_or_device, (str, torch.device)):
        device, model = torch.device(model_or_device), None
    else:
        device, model = next(model_or_device.parameters()).device, model_or_device
    library = getattr(getattr(cextension, "lib", None), "_lib", None)
    name = Path(getattr(library, "_name", "") or "no native library").name
    if device.type == "cuda":
        backend = "CUDA kernels"
    elif device.type == "cpu":
        kernel = bnb_cpu_kernel(model) if model is not None else (
            PACKED_CPU_KERNEL if bnb_packed_cpu_kernel()[0] else GENERIC_CPU_KERNEL)
        backend = f"CPU backend, {kernel}"
    else:
        backend = f"{device.type.upper()} backend"
    return f"bitsandbytes {bitsandbytes.__version__}: {backend}; native library {name}"


def plot_code_usage(x: torch.Tensor, books: dict[str, torch.Tensor] | None = None, block_size: int = 64):
    """Bar charts of how often each code is used for ``x``, one panel per code book, levels on the x axis."""
    books = books or codebooks()
    fig = plots.new_figure(figsize=(4 * len(books), 3.2), layout="constrained")
    axes = fig.subplots(1, len(books), sharey=True)
    for ax, (name, levels) in zip(axes, books.items()):
        usage = code_usage(x, levels, block_size)
        ax.bar(range(len(levels)), usage.numpy())
        ax.axhline(1 / len(levels), color="gray", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(levels)), [f"{v:.2f}" for v in levels.tolist()], rotation=90, fontsize=7)
        ax.set_title(name)
        ax.set_xlabel("level")
    axes[0].set_ylabel("share of values")
    fig.suptitle("How often each 4-bit code is used (dashed: every code equally often)", fontsize=10)
    return fig


# ------------------------------------------------------------------------------------------------ 4-bit models
def nf4_config(compute_dtype: torch.dtype = torch.float32) -> Any:
    """QLoRA's ``BitsAndBytesConfig``: 4-bit NF4 weights, double quantization, ``compute_dtype`` for the matmuls."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def is_quantized(model: Any) -> bool:
    """True when the model (or the base under its adapters) was loaded in 4 or 8 bits."""
    base = getattr(model, "get_base_model", lambda: model)()
    return bool(getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False))


def saved_quantized(location: str | Path) -> bool:
    """Whether the checkpoint folder ``location`` was saved already quantized (its config has a quantization_config)."""
    import json

    config_file = Path(location) / "config.json"
    return config_file.is_file() and "quantization_config" in json.loads(config_file.read_text())


def restore_training_layout(model: torch.nn.Module) -> int:
    """Undo bitsandbytes' CPU repacking of 4-bit weights, so that training backpropagates through them again.

    On CPUs with AVX-512 BF16, bitsandbytes 0.50 repacks a ``Linear4bit`` weight for its fused inference kernel the
    first time the layer runs in eval mode without gradients (a baseline evaluation, say), and from then on
    multiplies with that kernel in training too. The kernel has no backward: gradients stop at every 4-bit layer,
    and the adapters before it receive none. This puts back the canonical layout (what ``save_pretrained`` writes).
    Returns the number of layers changed.

    The inverse is a private function of recent bitsandbytes releases (the project's floor is older). Releases
    without it have no repacking either, so with no packed layer nothing is needed; a packed layer with no inverse
    to hand raises an error that says which release to install.
    """
    from bitsandbytes.nn import Linear4bit

    packed = [module for module in model.modules() if isinstance(module, Linear4bit)
              and getattr(getattr(module.weight, "quant_state", None), "packing_format_for_cpu", False)]
    if not packed:
        return 0
    import bitsandbytes.functional

    inverse = getattr(bitsandbytes.functional, "_convert_weight_packed_for_cpu_inverse", None)
    if inverse is None:
        raise RuntimeError(
            f"{len(packed)} 4-bit layers were repacked for bitsandbytes' CPU inference kernel, which has no backward, "
            f"and bitsandbytes {_bnb_version()} has no function to undo it: install bitsandbytes 0.50 or newer "
            "(pip install -U bitsandbytes), or train without an evaluation in eval mode before it.")
    for module in packed:
        module.weight.data, module.weight.quant_state = inverse(module.weight.data, module.weight.quant_state)
    return len(packed)


def _bnb_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("bitsandbytes")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"
