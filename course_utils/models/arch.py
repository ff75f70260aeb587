"""The pieces that turned GPT-2 into Llama, written out in plain PyTorch, and a Llama built from them.

Read it top to bottom: RMSNorm, the SiLU-gated feed-forward (SwiGLU), rotary position embeddings (RoPE) with
Llama 3's frequency scaling, grouped-query attention (GQA) with a key/value cache, then a decoder block and a whole
model. Module and parameter names are the ones ``transformers`` uses in ``modeling_llama.py`` (``gate_proj``,
``q_proj``, ``input_layernorm``, ...), so a Llama checkpoint's ``state_dict`` loads into these classes unchanged.

Every piece is checked against its ``transformers`` counterpart with copied weights by
:func:`compare_with_transformers` (and by ``tests/test_arch.py``): in float32 the outputs agree within
:data:`TOLERANCE` (the order of floating-point operations differs, so the match is close, not bit-exact).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

# How close a float32 component must come to transformers': |ours - theirs| <= atol + rtol * |theirs|.
TOLERANCE = {"atol": 1e-5, "rtol": 1e-4}
# A whole model adds up many layers' rounding differences; its logits get a looser bound.
MODEL_TOLERANCE = {"atol": 1e-4, "rtol": 1e-4}


class HeadCountError(ValueError):
    """Attention head counts that cannot work together (hidden size, query heads and key/value heads)."""


def check_head_counts(hidden_size: int, n_heads: int, n_kv_heads: int | None = None,
                      head_dim: int | None = None) -> int:
    """Validate an attention geometry and return the head dimension; raise :class:`HeadCountError` if it is wrong."""
    n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
    for name, value in (("hidden_size", hidden_size), ("num_attention_heads", n_heads),
                        ("num_key_value_heads", n_kv_heads)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise HeadCountError(f"{name} must be a positive integer, got {value!r}.")
    if head_dim is None:
        if hidden_size % n_heads:
            lower = max(d for d in range(1, n_heads + 1) if hidden_size % d == 0)
            raise HeadCountError(
                f"hidden_size={hidden_size} is not divisible by num_attention_heads={n_heads}: each head gets "
                f"hidden_size / heads dimensions, which must be a whole number. Use a head count that divides "
                f"{hidden_size} (for example {lower}), change hidden_size to a multiple of {n_heads} (such as "
                f"{n_heads * max(1, round(hidden_size / n_heads))}), or set head_dim explicitly as Gemma does.")
        head_dim = hidden_size // n_heads
    if n_heads % n_kv_heads:
        divisors = [d for d in range(1, n_heads + 1) if n_heads % d == 0]
        raise HeadCountError(
            f"num_attention_heads={n_heads} is not divisible by num_key_value_heads={n_kv_heads}: in grouped-query "
            f"attention every key/value head serves the same number of query heads. Choose num_key_value_heads "
            f"among {divisors} ({n_heads} is multi-head attention, 1 is multi-query attention).")
    if head_dim % 2:
        raise HeadCountError(f"head_dim={head_dim} is odd: rotary embeddings rotate pairs of dimensions, so the "
                             "head dimension must be even.")
    return head_dim


# ---------------------------------------------------------------------------------------------------------------
# RMSNorm: LayerNorm without the mean and the bias


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Divide ``x`` by the root mean square of its last dimension (computed in float32), then scale by ``weight``."""
    dtype = x.dtype
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + eps)
    return weight * normed.to(dtype)


class RMSNorm(nn.Module):
    """RMSNorm with a learned per-dimension gain (no bias, no mean subtraction)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


# ---------------------------------------------------------------------------------------------------------------
# SwiGLU: a feed-forward layer whose SiLU output gates a second projection


def silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU (also called swish): ``x * sigmoid(x)``."""
    return x * torch.sigmoid(x)


def swiglu(x: torch.Tensor, gate_weight: torch.Tensor, up_weight: torch.Tensor,
           down_weight: torch.Tensor) -> torch.Tensor:
    """``down(silu(gate(x)) * up(x))`` with ``nn.Linear``-shaped weights (out_features, in_features)."""
    return (silu(x @ gate_weight.T) * (x @ up_weight.T)) @ down_weight.T


class SwiGLUFeedForward(nn.Module):
    """Llama's MLP: three bias-free linear layers, the SiLU of one multiplying the other."""

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(silu(self.gate_proj(x)) * self.up_proj(x))


# ---------------------------------------------------------------------------------------------------------------
# Rotary position embeddings (RoPE)


def rope_inverse_frequencies(head_dim: int, theta: float = 10_000.0) -> torch.Tensor:
    """The ``head_dim / 2`` rotation speeds (radians per position) of RoPE: ``theta ** (-2i / head_dim)``."""
    if head_dim % 2:
        raise ValueError(f"RoPE rotates pairs of dimensions: head_dim must be even, got {head_dim}.")
    return 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)


def llama3_scale_frequencies(inv_freq: torch.Tensor, factor: float = 8.0, low_freq_factor: float = 1.0,
                             high_freq_factor: float = 4.0,
                             original_max_position_embeddings: int = 8192) -> torch.Tensor:
    """Llama 3.1's RoPE scaling: slow the slow rotations by ``factor``, keep the fast ones, blend in between.

    A dimension pair whose wavelength (positions per full turn) is longer than
    ``original_max_position_embeddings / low_freq_factor`` never completed a turn in training: its speed is divided
    by ``factor`` so that longer contexts map onto angles the model has seen. Pairs with a wavelength shorter than
    ``original_max_position_embeddings / high_freq_factor`` encode local order and stay as they are. In between,
    the speed is interpolated smoothly between the two.
    """
    if high_freq_factor <= low_freq_factor:
        raise ValueError(f"high_freq_factor ({high_freq_factor}) must be larger than low_freq_factor "
                         f"({low_freq_factor}): they bound the band of wavelengths that is blended.")
    wavelength = 2 * math.pi / inv_freq
    long_wavelength = original_max_position_embeddings / low_freq_factor
    short_wavelength = original_max_position_embeddings / high_freq_factor
    # 0 at the long-wavelength edge of the band (fully scaled), 1 at the short edge (unchanged).
    smooth = (original_max_position_embeddings / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    scaled = torch.where(wavelength > long_wavelength, inv_freq / factor, blended)
    return torch.where(wavelength < short_wavelength, inv_freq, scaled)


def rope_frequencies(head_dim: int, rope_parameters: Mapping[str, Any] | None = None) -> torch.Tensor:
    """Inverse frequencies from a config's ``rope_parameters`` (``"default"`` or ``"llama3"`` RoPE)."""
    params = dict(rope_parameters or {})
    rope_type = params.get("rope_type", params.get("type", "default"))
    inv_freq = rope_inverse_frequencies(head_dim, float(params.get("rope_theta", 10_000.0)))
    if rope_type == "default":
        return inv_freq
    if rope_type == "llama3":
        return llama3_scale_frequencies(
            inv_freq, factor=params["factor"], low_freq_factor=params["low_freq_factor"],
            high_freq_factor=params["high_freq_factor"],
            original_max_position_embeddings=params["original_max_position_embeddings"])
    raise ValueError(f"RoPE type {rope_type!r} is not written out in course_utils.models.arch, which has 'default' and "
                     "'llama3'. transformers implements the others in transformers.modeling_rope_utils "
                     "(ROPE_INIT_FUNCTIONS): load such a model with AutoModelForCausalLM instead.")


def rope_cos_sin(inv_freq: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of the rotation angles ``position * inv_freq``, shaped ``(*positions.shape, head_dim)``.

    Each angle appears twice (``cat([angles, angles])``): dimension ``i`` is paired with ``i + head_dim / 2``.
    """
    angles = positions[..., None].float() * inv_freq.float()
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Map each pair ``(a, b)`` = ``(x[i], x[i + d/2])`` to ``(-b, a)``: a quarter turn."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate every pair of ``x`` (batch, heads, seq, head_dim) by its angle; ``cos``/``sin`` are (seq, d) or (batch, seq, d)."""
    if cos.dim() == 3:  # (batch, seq, d): add the heads dimension
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return (x * cos + rotate_half(x) * sin).to(x.dtype)


def rope(x: torch.Tensor, positions: torch.Tensor, theta: float = 10_000.0) -> torch.Tensor:
    """Rotate ``x`` (batch, heads, seq, head_dim) for the given ``positions`` (seq,) with default RoPE."""
    cos, sin = rope_cos_sin(rope_inverse_frequencies(x.shape[-1], theta), positions)
    return apply_rope(x, cos, sin)


# ---------------------------------------------------------------------------------------------------------------
# Grouped-query attention and the key/value cache


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(batch, kv_heads, seq, d) -> (batch, kv_heads * n_rep, seq, d): each key/value head serves ``n_rep`` query
    heads that sit next to each other (query head ``h`` uses key/value head ``h // n_rep``)."""
    if n_rep == 1:
        return x
    batch, kv_heads, seq, dim = x.shape
    return x[:, :, None].expand(batch, kv_heads, n_rep, seq, dim).reshape(batch, kv_heads * n_rep, seq, dim)


def grouped_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention where ``k``/``v`` may have fewer heads than ``q`` (GQA); returns (batch, heads, seq_q, d).

    ``q`` is (batch, heads, seq_q, d) and ``k``, ``v`` are (batch, kv_heads, seq_k, d). When ``seq_q < seq_k`` the
    queries are the *last* ``seq_q`` positions (generation with a cache): query ``i`` sees keys up to
    ``seq_k - seq_q + i``.
    """
    n_heads, n_kv_heads = q.shape[1], k.shape[1]
    if n_heads % n_kv_heads:
        raise HeadCountError(f"{n_heads} query heads cannot be shared evenly by {n_kv_heads} key/value heads.")
    k, v = repeat_kv(k, n_heads // n_kv_heads), repeat_kv(v, n_heads // n_kv_heads)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    seq_q, seq_k = scores.shape[-2:]
    visible = torch.ones(seq_q, seq_k, dtype=torch.bool, device=q.device).tril(diagonal=seq_k - seq_q)
    scores = scores.masked_fill(~visible, float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    return weights @ v


@dataclass
class KVCache:
    """Keys and values of every past token, one entry per layer, each (batch, kv_heads, seq, head_dim)."""

    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's ``k``/``v`` for ``layer`` and return everything cached for it so far."""
        if layer == len(self.keys):
            self.keys.append(k)
            self.values.append(v)
        elif layer < len(self.keys):
            self.keys[layer] = torch.cat((self.keys[layer], k), dim=-2)
            self.values[layer] = torch.cat((self.values[layer], v), dim=-2)
        else:
            raise IndexError(f"layer {layer} updated before layer {len(self.keys)}: layers fill the cache in order.")
        return self.keys[layer], self.values[layer]

    def seq_length(self) -> int:
        """Tokens cached so far (0 when empty)."""
        return self.keys[0].shape[-2] if self.keys else 0

    def nbytes(self) -> int:
        """Bytes held by the cached tensors."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


class GroupedQueryAttention(nn.Module):
    """Llama's self-attention: RoPE on queries and keys, ``n_kv_heads`` key/value heads shared by ``n_heads``."""

    def __init__(self, hidden_size: int, n_heads: int, n_kv_heads: int | None = None, head_dim: int | None = None,
                 bias: bool = False) -> None:
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        self.head_dim = check_head_counts(hidden_size, n_heads, n_kv_heads, head_dim)
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.q_proj = nn.Linear(hidden_size, n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden_size, n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden_size, n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * self.head_dim, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        batch, seq, _ = x.shape
        q = self.q_proj(x).view(batch, seq, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, seq, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, seq, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        out = grouped_query_attention(q, k, v)
        return self.o_proj(out.transpose(1, 2).reshape(batch, seq, self.n_heads * self.head_dim))


# ---------------------------------------------------------------------------------------------------------------
# A Llama decoder block and a whole model


@dataclass(frozen=True)
class LlamaShape:
    """The ``config.json`` fields a Llama needs (the rest of the config does not change the computation)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_parameters: Mapping[str, Any] = field(default_factory=lambda: {"rope_type": "default",
                                                                          "rope_theta": 10_000.0})
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False

    @classmethod
    def from_config(cls, config: Any) -> LlamaShape:
        """From a transformers config object or a ``config.json`` dict (transformers 4.x or 5.x field names)."""
        get = (lambda key, default=None: config.get(key, default)) if isinstance(config, Mapping) else (
            lambda key, default=None: getattr(config, key, default))
        hidden, heads = get("hidden_size"), get("num_attention_heads")
        kv_heads = get("num_key_value_heads") or heads
        head_dim = check_head_counts(hidden, heads, kv_heads, get("head_dim"))
        return cls(vocab_size=get("vocab_size"), hidden_size=hidden, intermediate_size=get("intermediate_size"),
                   num_hidden_layers=get("num_hidden_layers"), num_attention_heads=heads,
                   num_key_value_heads=kv_heads, head_dim=head_dim, rms_norm_eps=get("rms_norm_eps", 1e-6),
                   rope_parameters=rope_parameters_of(config), tie_word_embeddings=bool(get("tie_word_embeddings")),
                   attention_bias=bool(get("attention_bias", False)), mlp_bias=bool(get("mlp_bias", False)))


def rope_parameters_of(config: Any) -> dict[str, Any]:
    """The RoPE settings of a config: ``rope_parameters`` (transformers 5) or ``rope_theta`` + ``rope_scaling`` (4.x)."""
    get = (lambda key: config.get(key)) if isinstance(config, Mapping) else (lambda key: getattr(config, key, None))
    params = get("rope_parameters")
    if isinstance(params, Mapping) and "rope_theta" in params:
        return dict(params)
    merged: dict[str, Any] = {"rope_type": "default", "rope_theta": get("rope_theta") or 10_000.0}
    scaling = get("rope_scaling")
    if isinstance(scaling, Mapping):
        merged.update(scaling)
        merged["rope_type"] = scaling.get("rope_type", scaling.get("type", "default"))
    return merged


class LlamaBlock(nn.Module):
    """Pre-norm decoder block: ``x + attention(norm(x))``, then ``x + feed_forward(norm(x))``."""

    def __init__(self, shape: LlamaShape) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(shape.hidden_size, shape.rms_norm_eps)
        self.self_attn = GroupedQueryAttention(shape.hidden_size, shape.num_attention_heads,
                                               shape.num_key_value_heads, shape.head_dim, shape.attention_bias)
        self.post_attention_layernorm = RMSNorm(shape.hidden_size, shape.rms_norm_eps)
        self.mlp = SwiGLUFeedForward(shape.hidden_size, shape.intermediate_size, shape.mlp_bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaBody(nn.Module):
    """Token embeddings, the blocks and the final norm: what ``AutoModel`` returns for a Llama (no LM head)."""

    def __init__(self, shape: LlamaShape) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(shape.vocab_size, shape.hidden_size)
        self.layers = nn.ModuleList(LlamaBlock(shape) for _ in range(shape.num_hidden_layers))
        self.norm = RMSNorm(shape.hidden_size, shape.rms_norm_eps)
        # A plain attribute, not a buffer: model.to(torch.bfloat16) must not round the rotation speeds.
        self.inv_freq = rope_frequencies(shape.head_dim, shape.rope_parameters)

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        start = cache.seq_length() if cache is not None else 0
        positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)
        cos, sin = rope_cos_sin(self.inv_freq.to(input_ids.device), positions)
        x = self.embed_tokens(input_ids)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        for index, block in enumerate(self.layers):
            x = block(x, cos, sin, cache, index)
        return self.norm(x)


class LlamaFromScratch(nn.Module):
    """A Llama causal LM from the pieces above; its ``state_dict`` keys are those of ``LlamaForCausalLM``."""

    def __init__(self, shape: LlamaShape) -> None:
        super().__init__()
        self.shape = shape
        self.model = LlamaBody(shape)
        self.lm_head = nn.Linear(shape.hidden_size, shape.vocab_size, bias=False)
        if shape.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (batch, seq, vocab) for ``input_ids``; with a ``cache``, only the new tokens are passed in."""
        return self.lm_head(self.model(input_ids, cache))

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, use_cache: bool = True) -> torch.Tensor:
        """Greedy decoding: with the cache, feed only the newest token; without it, the whole sequence every step."""
        cache = KVCache() if use_cache else None
        sequence, step_input = input_ids, input_ids
        for _ in range(max_new_tokens):
            logits = self(step_input if use_cache else sequence, cache)
            next_token = logits[:, -1].argmax(dim=-1, keepdim=True)
            sequence = torch.cat((sequence, next_token), dim=1)
            step_input = next_token
        return sequence

    @classmethod
    def from_transformers(cls, hf_model: nn.Module) -> LlamaFromScratch:
        """Copy the weights of a ``LlamaForCausalLM`` (or any model with its layout) into a new instance."""
        model = cls(LlamaShape.from_config(hf_model.config))
        weights = hf_model.state_dict()
        if model.shape.tie_word_embeddings:
            weights = {k: v for k, v in weights.items() if k != "lm_head.weight"}
        model.load_state_dict(weights, strict=not model.shape.tie_word_embeddings)
        param = next(hf_model.parameters())
        return model.to(device=param.device, dtype=param.dtype).eval()

    @classmethod
    def from_folder(cls, folder: str | Path) -> LlamaFromScratch:
        """Build from a ``save_pretrained`` folder: ``config.json`` for the shape, ``model.safetensors`` for weights."""
        from safetensors.torch import load_file

        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        if config.get("model_type") != "llama":
            raise ValueError(f"{folder} holds a {config.get('model_type')!r} model; LlamaFromScratch reads 'llama'.")
        model = cls(LlamaShape.from_config(config))
        weights = load_file(str(folder / "model.safetensors"))
        model.load_state_dict(weights, strict=not model.shape.tie_word_embeddings)
        return model.eval()


# ---------------------------------------------------------------------------------------------------------------
# Checking each piece against transformers, with copied weights


def tiny_llama_config(hidden_size: int = 64, n_heads: int = 4, n_kv_heads: int = 2, intermediate_size: int = 172,
                      n_layers: int = 2, vocab_size: int = 128, rope_parameters: Mapping[str, Any] | None = None,
                      head_dim: int | None = None) -> Any:
    """A small ``LlamaConfig`` (sdpa attention, float32) for comparisons; head counts are validated first."""
    from transformers import LlamaConfig

    head_dim = check_head_counts(hidden_size, n_heads, n_kv_heads, head_dim)
    rope = dict(rope_parameters or {"rope_type": "default", "rope_theta": 10_000.0})
    # A scaled RoPE is meant for contexts beyond the original one; transformers warns unless the config says so.
    max_positions = int(rope["factor"] * rope["original_max_position_embeddings"]) if "factor" in rope else 256
    config = LlamaConfig(hidden_size=hidden_size, intermediate_size=intermediate_size, num_hidden_layers=n_layers,
                         num_attention_heads=n_heads, num_key_value_heads=n_kv_heads, head_dim=head_dim,
                         vocab_size=vocab_size, max_position_embeddings=max_positions, pad_token_id=0,
                         bos_token_id=1, eos_token_id=2, rope_parameters=rope)
    config._attn_implementation = "sdpa"
    return config


# Llama 3.1's rope settings: config.json of meta-llama/Llama-3.1-8B (the pretraining lecture prints them under
# "Llama 3").
LLAMA31_ROPE: dict[str, Any] = {"rope_type": "llama3", "rope_theta": 500_000.0, "factor": 8.0,
                                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 8192}


@dataclass(frozen=True)
class ComponentMatch:
    """One component against its transformers counterpart: the largest difference and whether it is within bounds."""

    component: str
    reference: str
    max_abs_diff: float
    atol: float
    rtol: float
    ok: bool

    def as_row(self) -> dict[str, Any]:
        return {"ours (course_utils.models.arch)": self.component, "transformers": self.reference,
                "max |difference|": f"{self.max_abs_diff:.1e}",
                "tolerance": f"{self.atol:g} + {self.rtol:g}*|ref|", "within": "yes" if self.ok else "NO"}


def _match(component: str, reference: str, ours: torch.Tensor, theirs: torch.Tensor,
           tolerance: Mapping[str, float] = TOLERANCE) -> ComponentMatch:
    if ours.shape != theirs.shape:
        raise ValueError(f"{component}: shape {tuple(ours.shape)} against transformers' {tuple(theirs.shape)}")
    diff = (ours.double() - theirs.double()).abs()
    ok = bool((diff <= tolerance["atol"] + tolerance["rtol"] * theirs.double().abs()).all())
    return ComponentMatch(component, reference, float(diff.max()), tolerance["atol"], tolerance["rtol"], ok)


@torch.no_grad()
def compare_with_transformers(seed: int = 0, batch: int = 2, seq: int = 12) -> list[ComponentMatch]:
    """Run every piece here and its ``transformers.models.llama`` counterpart on the same inputs and weights."""
    from transformers import LlamaForCausalLM
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama import modeling_llama as hf

    torch.manual_seed(seed)
    config = tiny_llama_config()
    hidden, head_dim = config.hidden_size, config.head_dim
    x = torch.randn(batch, seq, hidden)
    positions = torch.arange(seq)
    results = []

    norm = hf.LlamaRMSNorm(hidden, eps=config.rms_norm_eps)
    nn.init.normal_(norm.weight, 1.0, 0.1)
    ours_norm = RMSNorm(hidden, config.rms_norm_eps)
    ours_norm.load_state_dict(norm.state_dict())
    results.append(_match("RMSNorm", "LlamaRMSNorm", ours_norm(x), norm(x)))

    mlp = hf.LlamaMLP(config)
    ours_mlp = SwiGLUFeedForward(hidden, config.intermediate_size)
    ours_mlp.load_state_dict(mlp.state_dict())
    results.append(_match("SwiGLUFeedForward", "LlamaMLP", ours_mlp(x), mlp(x)))

    rotary = hf.LlamaRotaryEmbedding(config)
    q = torch.randn(batch, config.num_attention_heads, seq, head_dim)
    cos, sin = rotary(q, positions[None].expand(batch, seq))
    theirs_q, _ = hf.apply_rotary_pos_emb(q, q, cos, sin)
    results.append(_match("rope (default)", "LlamaRotaryEmbedding + apply_rotary_pos_emb",
                          rope(q, positions, config.rope_parameters["rope_theta"]), theirs_q))

    config31 = tiny_llama_config(head_dim=128, hidden_size=256, n_heads=2, rope_parameters=LLAMA31_ROPE)
    theirs_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](config31)
    results.append(_match("rope_frequencies (llama3)", 'ROPE_INIT_FUNCTIONS["llama3"]',
                          rope_frequencies(128, LLAMA31_ROPE), theirs_freq))

    attention = hf.LlamaAttention(config, layer_idx=0)
    ours_attention = GroupedQueryAttention(hidden, config.num_attention_heads, config.num_key_value_heads, head_dim)
    ours_attention.load_state_dict(attention.state_dict())
    cos, sin = rotary(x, positions[None].expand(batch, seq))
    theirs_out, _ = attention(x, position_embeddings=(cos, sin), attention_mask=None)
    results.append(_match("GroupedQueryAttention", "LlamaAttention (sdpa, causal)",
                          ours_attention(x, *rope_cos_sin(rope_frequencies(head_dim, config.rope_parameters),
                                                          positions)), theirs_out))

    layer = hf.LlamaDecoderLayer(config, layer_idx=0)
    for p in layer.parameters():
        nn.init.normal_(p, 0.0 if p.dim() > 1 else 1.0, 0.1)
    ours_block = LlamaBlock(LlamaShape.from_config(config))
    ours_block.load_state_dict(layer.state_dict())
    theirs_block = layer(x, attention_mask=None, position_embeddings=(cos, sin))
    theirs_block = theirs_block[0] if isinstance(theirs_block, tuple) else theirs_block
    ours_cos, ours_sin = rope_cos_sin(rope_frequencies(head_dim, config.rope_parameters), positions)
    results.append(_match("LlamaBlock", "LlamaDecoderLayer", ours_block(x, ours_cos, ours_sin), theirs_block))

    hf_model = LlamaForCausalLM(config).eval()
    ids = torch.randint(3, config.vocab_size, (batch, seq))
    results.append(_match("LlamaFromScratch (logits)", "LlamaForCausalLM",
                          LlamaFromScratch.from_transformers(hf_model)(ids), hf_model(ids).logits, MODEL_TOLERANCE))
    return results
