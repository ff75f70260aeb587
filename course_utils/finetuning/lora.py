"""LoRA from scratch: a frozen linear layer plus a trainable low-rank update, ``W0 + (alpha / r) B A``.

A linear layer ``y = x W0^T + b`` with ``W0`` of shape ``(d, k)`` (``d`` outputs, ``k`` inputs) gets two small
matrices: ``A`` of shape ``(r, k)`` and ``B`` of shape ``(d, r)``. Only ``A`` and ``B`` are trained, so a layer
costs ``r (d + k)`` trainable parameters instead of ``d k``. ``B`` starts at zero, so at step 0 the product ``B A``
is zero and the model computes exactly what the pretrained one did; ``A`` starts random (Kaiming-uniform, as
``nn.Linear`` and PEFT initialise it), so that gradients reach ``B`` from the first step. The update is scaled by
``alpha / r``: changing the rank then does not change how large the update starts out.

The same layer is what PEFT builds (``peft.tuners.lora.Linear``); :func:`copy_into_peft` loads one model's
``A`` and ``B`` into the other so the notebook can show that both compute the same thing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

# The linear layers of a Llama-style block (attention and SwiGLU MLP): what QLoRA and most recipes adapt.
LLAMA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, lora_A: torch.Tensor,
                 lora_B: torch.Tensor, alpha: float, r: int) -> torch.Tensor:
    """``x W0^T + b + (alpha / r) (x A^T) B^T``: the LoRA layer's output, never forming the d x k matrix ``B A``."""
    base = torch.nn.functional.linear(x, weight, bias)
    return base + (alpha / r) * ((x @ lora_A.T) @ lora_B.T)


class LoRALinear(nn.Module):
    """An ``nn.Linear`` whose weights are frozen, plus trainable ``lora_A`` (r x k) and ``lora_B`` (d x r)."""

    def __init__(self, base: nn.Linear, r: int = 16, alpha: float = 32, dropout: float = 0.0):
        super().__init__()
        if not isinstance(r, int) or r < 1:
            raise ValueError(f"The LoRA rank r must be a positive integer, got {r!r}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.r, self.alpha = r, alpha
        weight = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=weight.dtype, device=weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=weight.dtype, device=weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def scaling(self) -> float:
        """``alpha / r``: the factor in front of ``B A``."""
        return self.alpha / self.r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base(x)
        return base + self.scaling * ((self.dropout(x) @ self.lora_A.T) @ self.lora_B.T)

    def delta_weight(self) -> torch.Tensor:
        """The update ``(alpha / r) B A`` as a full d x k matrix (what merging adds to ``W0``)."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with weight ``W0 + (alpha / r) B A``: the same outputs, no extra matmuls."""
        layer = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                          device=self.base.weight.device, dtype=self.base.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(self.base.weight + self.delta_weight())
            if self.base.bias is not None:
                layer.bias.copy_(self.base.bias)
        return layer

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:g}"


# ------------------------------------------------------------------------------------------------ counting
def lora_param_count(d_out: int, d_in: int, r: int) -> int:
    """Trainable parameters LoRA adds to one ``d_out x d_in`` layer: ``r (d_out + d_in)``."""
    return r * (d_out + d_in)


def full_param_count(d_out: int, d_in: int) -> int:
    """Parameters of the ``d_out x d_in`` weight itself (what full fine-tuning trains)."""
    return d_out * d_in


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameters of ``model``, each shared tensor counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = _numel(p)
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def _numel(p: torch.Tensor) -> int:
    """Logical parameters of a tensor; bitsandbytes packs two 4-bit weights per byte and says so in quant_state."""
    state = getattr(p, "quant_state", None)
    if state is not None and getattr(state, "shape", None) is not None:
        return math.prod(state.shape)
    return p.numel()


def _matches(name: str, targets: Iterable[str]) -> bool:
    return name.split(".")[-1] in tuple(targets)


def linear_shapes(model: nn.Module, target_modules: Sequence[str] = LLAMA_TARGETS) -> list[tuple[str, int, int]]:
    """``(name, d_out, d_in)`` of every targeted linear layer (``nn.Linear`` or a quantized one) of ``model``."""
    shapes = []
    for name, module in model.named_modules():
        if _matches(name, target_modules) and hasattr(module, "in_features") and hasattr(module, "out_features"):
            shapes.append((name, int(module.out_features), int(module.in_features)))
    if not shapes:
        raise ValueError(f"No linear layer of {type(model).__name__} is named one of {tuple(target_modules)}.")
    return shapes


def count_table(shapes: Sequence[tuple[str, int, int]], r: int) -> list[dict[str, object]]:
    """One row per distinct layer shape: how many layers, full parameters and LoRA parameters at rank ``r``."""
    groups: dict[tuple[str, int, int], int] = {}
    for name, d_out, d_in in shapes:
        key = (name.split(".")[-1], d_out, d_in)
        groups[key] = groups.get(key, 0) + 1
    rows: list[dict[str, object]] = []
    for (kind, d_out, d_in), n in groups.items():
        full, lora = full_param_count(d_out, d_in), lora_param_count(d_out, d_in, r)
        rows.append({"layer": kind, "d x k": f"{d_out} x {d_in}", "layers": n, "full (all layers)": n * full,
                     f"LoRA r={r} (all layers)": n * lora, "ratio": f"{full / lora:.1f}x"})
    total_full = sum(full_param_count(d, k) for _, d, k in shapes)
    total_lora = sum(lora_param_count(d, k, r) for _, d, k in shapes)
    rows.append({"layer": "total", "d x k": "", "layers": len(shapes), "full (all layers)": total_full,
                 f"LoRA r={r} (all layers)": total_lora, "ratio": f"{total_full / total_lora:.1f}x"})
    return rows


# ------------------------------------------------------------------------------------------------ wrapping a model
def add_lora(model: nn.Module, target_modules: Sequence[str] = LLAMA_TARGETS, r: int = 16, alpha: float = 32,
             dropout: float = 0.0, seed: int | None = 0) -> nn.Module:
    """Freeze ``model`` and replace each targeted ``nn.Linear`` by a :class:`LoRALinear`, in place; returns it."""
    for p in model.parameters():
        p.requires_grad_(False)
    if seed is not None:
        torch.manual_seed(seed)
    targets = [(name, module) for name, module in model.named_modules()
               if _matches(name, target_modules) and isinstance(module, nn.Linear)]
    if not targets:
        raise ValueError(f"No nn.Linear of {type(model).__name__} is named one of {tuple(target_modules)}.")
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(module, r=r, alpha=alpha, dropout=dropout))
    return model


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The :class:`LoRALinear` modules of ``model`` by name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


@torch.no_grad()
def randomize_lora_B(model: nn.Module, std: float = 0.02, seed: int = 0) -> None:
    """Give every ``B`` random values (training would), so that comparisons are not trivially equal to the base."""
    generator = torch.Generator().manual_seed(seed)
    for layer in lora_layers(model).values():
        layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=generator) * std)


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` by its merged ``nn.Linear``, in place; returns ``model``."""
    for name, layer in list(lora_layers(model).items()):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.merged())
    return model


@torch.no_grad()
def copy_into_peft(scratch: nn.Module, peft_model: nn.Module, adapter: str = "default") -> int:
    """Copy ``A`` and ``B`` of every :class:`LoRALinear` of ``scratch`` into the same layer of a PEFT model.

    Returns the number of layers copied. Fails when a layer is missing or ranks/scalings differ, so that an
    equality test afterwards really compares the same adapter.
    """
    inner = peft_model.base_model.model if hasattr(peft_model, "base_model") else peft_model
    copied = 0
    for name, layer in lora_layers(scratch).items():
        target = inner.get_submodule(name)
        if not hasattr(target, "lora_A") or adapter not in target.lora_A:
            raise KeyError(f"The PEFT model has no LoRA adapter {adapter!r} on {name}: add it with the same "
                           "target_modules.")
        if not math.isclose(target.scaling[adapter], layer.scaling):
            raise ValueError(f"{name}: PEFT scales by {target.scaling[adapter]:g}, the scratch layer by "
                             f"{layer.scaling:g}; use the same r and lora_alpha.")
        target.lora_A[adapter].weight.copy_(layer.lora_A)
        target.lora_B[adapter].weight.copy_(layer.lora_B)
        copied += 1
    return copied
