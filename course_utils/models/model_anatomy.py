"""Looking inside a model: where its parameters are, whether its embeddings are tied, and how GPT-2, Llama 2,
Llama 3 and Gemma differ, read from their configurations (``course_utils.models.model_specs``) and the modules that
transformers builds from them on the ``meta`` device (shapes, no memory, nothing downloaded).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from course_utils.models import memory, model_specs
from course_utils.models.arch import (
    LLAMA31_ROPE,
    rope_frequencies,
    rope_inverse_frequencies,
    rope_parameters_of,
)
from course_utils.reporting import plots

COMPONENTS = ("token embeddings", "position embeddings", "attention", "feed-forward", "MoE router",
              "feed-forward (experts)", "norms", "output head", "other")

_TOKEN_EMBEDDINGS = {"wte", "embed_tokens", "word_embeddings", "shared", "token_type_embeddings"}
_POSITION_EMBEDDINGS = {"wpe", "position_embeddings", "embed_positions"}
_ATTENTION = {"attn", "self_attn", "attention", "SelfAttention", "EncDecAttention", "encoder_attn",
              "crossattention"}
_FEED_FORWARD = {"mlp", "DenseReluDense", "intermediate", "output", "fc1", "fc2", "feed_forward",
                 "block_sparse_moe"}


def component_of(name: str) -> str:
    """The part of the architecture a parameter belongs to, from its dotted name (see :data:`COMPONENTS`)."""
    parts = name.split(".")
    if parts[0] in ("lm_head", "cls"):
        return "output head"
    if _TOKEN_EMBEDDINGS & set(parts):
        return "token embeddings"
    if _POSITION_EMBEDDINGS & set(parts):
        return "position embeddings"
    if any("norm" in p.lower() or p.startswith("ln_") for p in parts):
        return "norms"
    if "router" in parts or any(a == "mlp" and b == "gate" for a, b in zip(parts, parts[1:])):
        return "MoE router"
    if "experts" in parts:
        return "feed-forward (experts)"
    if _ATTENTION & set(parts):
        return "attention"
    if _FEED_FORWARD & set(parts):
        return "feed-forward"
    return "other"


def parameter_breakdown(model: torch.nn.Module) -> dict[str, int]:
    """Parameters per component; ``named_parameters()`` lists a tied weight once, so it is counted once."""
    counts = dict.fromkeys(COMPONENTS, 0)
    for name, param in model.named_parameters():
        counts[component_of(name)] += param.numel()
    return {k: v for k, v in counts.items() if v}


def breakdown_table(models: dict[str, torch.nn.Module]) -> list[dict[str, str]]:
    """One row per component, one column per model: parameters and their share of the total."""
    counts = {label: parameter_breakdown(model) for label, model in models.items()}
    components = [c for c in COMPONENTS if any(c in per for per in counts.values())]
    rows = []
    for component in [*components, "total"]:
        row = {"component": component}
        for label, per in counts.items():
            total = sum(per.values())
            value = total if component == "total" else per.get(component, 0)
            row[label] = f"{value:,} ({100 * value / total:.1f}%)" if value else "-"
        rows.append(row)
    return rows


def parameter_names(model: torch.nn.Module, first: int | None = None, layer: int | None = 0) -> list[dict[str, str]]:
    """Name, shape, count and component of each parameter; with ``layer``, blocks other than that one are left out."""
    rows = []
    for name, param in model.named_parameters():
        numbers = [p for p in name.split(".") if p.isdigit()]
        if layer is not None and numbers and int(numbers[0]) != layer:
            continue
        rows.append({"name": name, "shape": str(tuple(param.shape)), "parameters": f"{param.numel():,}",
                     "component": component_of(name), "dtype": str(param.dtype).replace("torch.", "")})
    return rows[:first] if first else rows


@dataclass(frozen=True)
class TiedEmbeddings:
    """Whether the output layer reuses the input embedding matrix, shown by the tensors' memory addresses."""

    input_name: str
    output_name: str
    input_ptr: int
    output_ptr: int
    config_says: bool
    shape: tuple[int, ...]

    @property
    def tied(self) -> bool:
        return self.input_ptr == self.output_ptr

    @property
    def saved_params(self) -> int:
        """Parameters the tying saves (one vocabulary x hidden matrix)."""
        return math.prod(self.shape) if self.tied else 0


def tied_embeddings(model: torch.nn.Module) -> TiedEmbeddings:
    """Compare the ``data_ptr()`` of the input embeddings and the LM head's weight."""
    inputs, outputs = model.get_input_embeddings(), model.get_output_embeddings()
    if outputs is None:
        raise ValueError(f"{type(model).__name__} has no output layer: load it with a ...ForCausalLM/LM-head class.")
    names: dict[int, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), name)  # the first name of a shared tensor is the input embedding's
    return TiedEmbeddings(names.get(id(inputs.weight), "?"), _output_name(model),
                          inputs.weight.data_ptr(), outputs.weight.data_ptr(),
                          bool(getattr(model.config, "tie_word_embeddings", False)), tuple(inputs.weight.shape))


def _output_name(model: torch.nn.Module) -> str:
    output = model.get_output_embeddings()
    for name, module in model.named_modules():
        if module is output:
            return f"{name}.weight"
    return "?"


def saved_tensor_names(model: Any) -> list[str]:
    """The tensor names ``save_pretrained`` writes (into a temporary folder, read back from the safetensors header)."""
    from safetensors import safe_open

    names: set[str] = set()
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        for path in Path(folder).glob("*.safetensors"):
            with safe_open(str(path), "pt") as saved:
                names.update(saved.keys())
    return sorted(names)


def state_dict_summary(model: torch.nn.Module, *, saved: bool = False) -> dict[str, int]:
    """How many entries ``state_dict()`` has, against ``named_parameters()`` and the distinct tensors behind them
    (with ``saved``, also how many tensors ``save_pretrained`` writes)."""
    state = model.state_dict()
    summary = {"state_dict entries": len(state),
               "named_parameters()": sum(1 for _ in model.named_parameters()),
               "distinct tensors in state_dict": len({t.data_ptr() for t in state.values() if t.numel()}),
               "buffers saved in state_dict": sum(1 for n, _ in model.named_buffers() if n in state)}
    if saved:
        summary["tensors save_pretrained writes"] = len(saved_tensor_names(model))
    return summary


# ---------------------------------------------------------------------------------------------------------------
# GPT-2 to Llama 3: the configurations side by side


def meta_model(name: str) -> Any:
    """The ``AutoModelForCausalLM`` of a :data:`model_specs.MODEL_SPECS` entry on the meta device."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(model_specs.get_spec(name).build_config())


def _features(name: str) -> dict[str, str]:
    config = model_specs.get_spec(name).build_config()
    size = model_specs.model_size(name)
    model = meta_model(name)
    module_types = {type(m).__name__ for m in model.modules()}
    norm = "RMSNorm" if any("RMSNorm" in t for t in module_types) else "LayerNorm (mean and bias)"
    activation = getattr(config, "hidden_act", None) or getattr(config, "activation_function", "?")
    gated = any(n.endswith("gate_proj") for n, _ in model.named_modules())
    d = size.hidden_size
    if gated:
        ffn = config.intermediate_size
        feed_forward = f"gated {activation}: {d}->2x{ffn}->{d} (3 matrices)"
    else:
        ffn = getattr(config, "n_inner", None) or 4 * d
        feed_forward = f"{activation}: {d}->{ffn}->{d} (2 matrices)"
    breakdown = parameter_breakdown(model)
    if breakdown.get("position embeddings"):
        positions = f"learned table, {size.max_context:,} x {d} ({breakdown['position embeddings']:,} params)"
    else:
        rope = rope_parameters_of(config)
        positions = f"RoPE on q and k, theta = {rope['rope_theta']:,.0f}" + (
            f" ({rope['rope_type']} scaling)" if rope.get("rope_type", "default") != "default" else "")
    per_token = memory.kv_cache_bytes(size.n_layers, size.n_kv_heads, size.head_dim, 1)
    return {
        "parameters": f"{size.total_params / 1e9:.2f} B",
        "layers x hidden size": f"{size.n_layers} x {d}",
        "attention": f"{size.attention}: {size.n_heads} query / {size.n_kv_heads} key-value heads",
        "head dimension": str(size.head_dim),
        "normalization": norm,
        "feed-forward": feed_forward,
        "positions": positions,
        "max context (config)": f"{size.max_context:,}",
        "vocabulary": f"{size.vocab_size:,}",
        "tied input/output embeddings": "yes" if size.tied_embeddings else "no",
        "KV cache per token, 16-bit": f"{per_token / 1024:,.0f} KiB",
        "KV cache at 4,096 tokens, 16-bit": f"{memory.model_kv_cache_bytes(name, 4096) / memory.GIB:.3f} GiB",
    }


COMPARED = ("GPT-2", "Llama-2-7B", "Llama-3-8B", "Gemma-2B")


def architecture_table(names: Sequence[str] = COMPARED) -> list[dict[str, str]]:
    """One row per feature, one column per model, generated from the configs in ``model_specs``."""
    per_model = {name: _features(name) for name in names}
    return [{"": feature, **{name: per_model[name][feature] for name in names}}
            for feature in per_model[names[0]]]


def _longest_wavelength(name: str) -> float:
    size = model_specs.model_size(name)
    rope = rope_parameters_of(model_specs.get_spec(name).build_config())
    return float(2 * math.pi / rope_frequencies(size.head_dim, rope).min())


def changes_table() -> list[dict[str, str]]:
    """What each step from GPT-2 to Llama 3 changes, computed from the configs (per layer where it says so)."""
    gpt2, llama2, llama3 = (model_specs.model_size(n) for n in ("GPT-2", "Llama-2-7B", "Llama-3-8B"))
    gpt2_parts = parameter_breakdown(meta_model("GPT-2"))
    llama2_ffn = 3 * llama2.hidden_size * model_specs.get_spec("Llama-2-7B").config["intermediate_size"]
    gpt2_ffn = 2 * gpt2.hidden_size * 4 * gpt2.hidden_size

    def kv_proj(size: model_specs.ModelSize) -> int:
        return 2 * size.hidden_size * size.n_kv_heads * size.head_dim

    def per_token(size: model_specs.ModelSize) -> float:
        return memory.kv_cache_bytes(size.n_layers, size.n_kv_heads, size.head_dim, 1) / 1024

    def vocab_params(size: model_specs.ModelSize) -> int:
        return size.vocab_size * size.hidden_size * (1 if size.tied_embeddings else 2)

    return [
        {"change": "learned position table -> RoPE", "models": "GPT-2 -> Llama 2",
         "what it buys": f"{gpt2_parts['position embeddings']:,} position parameters -> 0; position enters as a "
                         "rotation of q and k, so attention scores depend on the distance between tokens"},
        {"change": "LayerNorm -> RMSNorm", "models": "GPT-2 -> Llama 2",
         "what it buys": "per norm, a gain and a bias (2 x hidden size parameters) -> a gain only (1 x hidden "
                         "size); no mean to subtract, one reduction over the vector instead of two"},
        {"change": "GELU MLP -> SwiGLU", "models": "GPT-2 -> Llama 2",
         "what it buys": f"feed-forward weights per layer {gpt2_ffn / gpt2.hidden_size ** 2:.2f} d^2 -> "
                         f"{llama2_ffn / llama2.hidden_size ** 2:.2f} d^2: about the same budget, spent on a "
                         "gate (the width shrinks from 4d to about 8d/3)"},
        {"change": "MHA -> GQA", "models": "Llama 2 -> Llama 3",
         "what it buys": f"k/v projection weights per layer {kv_proj(llama2):,} -> {kv_proj(llama3):,}; KV cache "
                         f"per token {per_token(llama2):,.0f} -> {per_token(llama3):,.0f} KiB (16-bit)"},
        {"change": "RoPE theta 10,000 -> 500,000", "models": "Llama 2 -> Llama 3",
         "what it buys": f"slowest rotation: one turn every {_longest_wavelength('Llama-2-7B'):,.0f} -> "
                         f"{_longest_wavelength('Llama-3-8B'):,.0f} positions, so far-apart positions stay distinct"},
        {"change": "vocabulary 32,000 -> 128,256", "models": "Llama 2 -> Llama 3",
         "what it buys": f"embedding + output parameters {vocab_params(llama2) / 1e6:,.0f} M -> "
                         f"{vocab_params(llama3) / 1e6:,.0f} M; fewer tokens per text"},
    ]


def plot_rope_scaling(head_dim: int = 128, rope_parameters: dict[str, Any] | None = None) -> Any:
    """Wavelength (positions per full turn) of each RoPE pair, unscaled and with Llama 3's scaling; a Figure."""
    rope = dict(rope_parameters or LLAMA31_ROPE)
    base = rope_inverse_frequencies(head_dim, rope["rope_theta"])
    scaled = rope_frequencies(head_dim, rope)
    fig = plots.new_figure(figsize=(6.8, 3.8), layout="constrained")
    ax = fig.subplots()
    pairs = range(len(base))
    ax.plot(pairs, (2 * math.pi / base).tolist(), "o", ms=3, label="rope_type default")
    ax.plot(pairs, (2 * math.pi / scaled).tolist(), ".", ms=3, label=f"rope_type llama3, factor {rope['factor']:g}")
    original = rope["original_max_position_embeddings"]
    for wavelength, text in ((original / rope["low_freq_factor"], "original / low_freq_factor"),
                             (original / rope["high_freq_factor"], "original / high_freq_factor")):
        ax.axhline(wavelength, color="grey", ls="--", lw=1)
        ax.annotate(f"{text} = {wavelength:,.0f}", (0, wavelength), fontsize=7, va="bottom")
    ax.set_yscale("log")
    ax.set_xlabel(f"dimension pair i (of {head_dim // 2})")
    ax.set_ylabel("wavelength (positions per turn)")
    ax.set_title(f"RoPE wavelengths, theta = {rope['rope_theta']:,.0f}: the slow pairs are stretched", fontsize=10)
    ax.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------------------------------
# Mixture of experts: parameters stored against parameters used per token


@dataclass(frozen=True)
class MoeCounts:
    """Parameters of a mixture-of-experts model: all of them, and those one token passes through."""

    total: int
    experts: int
    n_experts: int
    experts_per_token: int

    @property
    def active(self) -> int:
        return self.total - self.experts + self.experts * self.experts_per_token // self.n_experts


def moe_counts(model: torch.nn.Module) -> MoeCounts:
    """Count expert parameters (names containing ``experts``) and the config's experts per token."""
    config = model.config
    n_experts = getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None)
    per_token = getattr(config, "num_experts_per_tok", None)
    if not n_experts or not per_token:
        raise ValueError(f"{type(model).__name__} is not a mixture of experts: its config has no expert counts.")
    total = sum(p.numel() for p in model.parameters())
    experts = sum(p.numel() for n, p in model.named_parameters() if component_of(n) == "feed-forward (experts)")
    return MoeCounts(total, experts, int(n_experts), int(per_token))


# config.json of mistralai/Mixtral-8x7B-v0.1: eight SwiGLU experts per layer, two used per token.
MIXTRAL_8X7B = model_specs.ModelSpec(
    "Mixtral-8x7B", "mistralai/Mixtral-8x7B-v0.1",
    {"model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
     "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 32768,
     "num_local_experts": 8, "num_experts_per_tok": 2, "tie_word_embeddings": False},
    "config.json of mistralai/Mixtral-8x7B-v0.1")
