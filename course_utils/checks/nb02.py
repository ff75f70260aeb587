"""Checks for Notebook 02 (Auto classes and architectures): the causal LM loss, the Llama pieces, and the experiment
that finds where the loss rises past the training window.

Each check builds the matching ``transformers`` module (random weights, fixed seed), feeds the same inputs to it
and to the student's function, and compares in float32 within :data:`course_utils.models.arch.TOLERANCE`. Before the
final comparison it tries the usual mistakes, so the message can name the one it recognises.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from course_utils.checks import (
    CheckFailed,
    call,
    check,
    expect,
    expect_tensor_close,
    library_calls,
    measured_losses,
    passed,
    passed_experiment,
)
from course_utils.models import arch

ATOL, RTOL = arch.TOLERANCE["atol"], arch.TOLERANCE["rtol"]


def _tensor(value: Any, what: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise CheckFailed(f"{what}: expected a torch.Tensor, got {type(value).__name__}. Return the result, do not "
                          "print it.")
    if shape is not None and tuple(value.shape) != shape:
        raise CheckFailed(f"{what}: expected shape {shape}, got {tuple(value.shape)}.")
    return value.detach()


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL, rtol: float = RTOL) -> bool:
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), atol=atol, rtol=rtol)


# ---------------------------------------------------------------------------------------------------------------
# The loss a causal LM returns when given labels


@check()
def causal_lm_loss(student: Callable[[torch.Tensor, torch.Tensor], Any]) -> None:
    """``causal_lm_loss(logits, labels)`` equals ``LlamaForCausalLM(...)(input_ids, labels=labels).loss``."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(arch.tiny_llama_config(vocab_size=96)).eval()
    input_ids = torch.randint(3, 96, (3, 10))
    labels = input_ids.clone()
    labels[0, :4] = -100  # e.g. a prompt whose tokens are not trained on
    labels[2, -2:] = -100  # e.g. padding
    with torch.no_grad():
        out = model(input_ids=input_ids, labels=labels)
    logits, expected = out.logits, out.loss
    got = call(student, logits.clone(), labels.clone(), what="causal_lm_loss")
    got = _tensor(got, "causal_lm_loss(logits, labels)")
    if got.numel() != 1:
        raise CheckFailed(f"causal_lm_loss: expected a single number (a 0-dimensional tensor), got shape "
                          f"{tuple(got.shape)}. Average the per-token losses.")
    value = got.reshape(()).double()

    def ce(lg: torch.Tensor, lb: torch.Tensor, **kw: Any) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]).double(), lb.reshape(-1), **kw)

    unshifted = ce(logits, labels)
    backwards = ce(logits[:, 1:], labels[:, :-1])
    summed = ce(logits[:, :-1], labels[:, 1:], reduction="sum")
    if torch.isclose(value, unshifted, rtol=1e-4):
        raise CheckFailed(f"causal_lm_loss: got {value.item():.4f}, the loss without the shift. The logits at "
                          "position t predict the token at t + 1: compare logits[:, :-1] with labels[:, 1:].")
    if torch.isclose(value, backwards, rtol=1e-4):
        raise CheckFailed(f"causal_lm_loss: got {value.item():.4f}: the shift goes the wrong way. Drop the LAST "
                          "logit and the FIRST label: logits[:, :-1] against labels[:, 1:].")
    if torch.isclose(value, summed, rtol=1e-4):
        raise CheckFailed(f"causal_lm_loss: got {value.item():.4f}, the sum over tokens; transformers returns the "
                          "mean over the tokens whose label is not -100.")
    if not torch.isclose(value, expected.double(), rtol=1e-4, atol=1e-5):
        raise CheckFailed(f"causal_lm_loss: expected {expected.item():.4f} (what the model returns with labels=), "
                          f"got {value.item():.4f}. Use cross-entropy over the vocabulary on the shifted logits and "
                          "labels, ignoring labels equal to -100 (cross_entropy's ignore_index default).")
    passed(f"causal_lm_loss: {value.item():.4f}, the same loss as model(input_ids, labels=labels).loss.")


# ---------------------------------------------------------------------------------------------------------------
# RMSNorm


@check(forbids=("course_utils.models.arch.rms_norm", "course_utils.models.arch.RMSNorm",
                *library_calls("this exercise asks you to write RMSNorm yourself",
                               "torch.nn.functional.rms_norm", "torch.rms_norm", "torch.nn.RMSNorm")))
def rms_norm(student: Callable[..., Any]) -> None:
    """``rms_norm(x, weight, eps)`` equals ``LlamaRMSNorm`` with the same weight and eps."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(0)
    for shape, eps, offset, label in (((2, 5, 64), 1e-6, 0.0, "random input"),
                                      ((3, 48), 1e-5, 3.0, "input whose mean is far from zero"),
                                      ((4, 32), 0.5, 0.0, "small input with a large eps")):
        x = torch.randn(*shape) * (0.3 if eps > 0.1 else 1.0) + offset
        reference = LlamaRMSNorm(shape[-1], eps=eps)
        torch.nn.init.normal_(reference.weight, 1.0, 0.2)
        with torch.no_grad():
            expected = reference(x)
        weight = reference.weight.detach().clone()
        what = f"rms_norm on a {tuple(shape)} {label} (eps={eps})"
        got = _tensor(call(student, x.clone(), weight, eps, what="rms_norm"), what, tuple(shape))
        if _close(got, expected):
            continue
        mean_removed = x - x.mean(-1, keepdim=True)
        layer_norm = weight * mean_removed / torch.sqrt(mean_removed.pow(2).mean(-1, keepdim=True) + eps)
        no_weight = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        eps_outside = weight * x / (torch.sqrt(x.pow(2).mean(-1, keepdim=True)) + eps)
        no_eps = weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True))
        l2_norm = weight * x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps)
        if _close(got, layer_norm, 1e-4, 1e-4):
            raise CheckFailed(f"{what}: you subtracted the mean, which is LayerNorm. RMSNorm only divides by the "
                              "root mean square sqrt(mean(x**2) + eps), then multiplies by weight.")
        if _close(got, no_weight, 1e-4, 1e-4):
            raise CheckFailed(f"{what}: the result is not scaled by `weight`; multiply the normalized x by it.")
        if _close(got, eps_outside, 1e-4, 1e-4):
            raise CheckFailed(f"{what}: eps is added after the square root; it belongs inside: "
                              "sqrt(mean(x**2) + eps).")
        if _close(got, no_eps, 1e-4, 1e-4):
            raise CheckFailed(f"{what}: eps is missing; divide by sqrt(mean(x**2) + eps).")
        if _close(got, l2_norm, 1e-4, 1e-4):
            raise CheckFailed(f"{what}: you divided by the norm sqrt(sum(x**2)); RMSNorm uses the MEAN of the "
                              "squares over the last dimension.")
        expect_tensor_close(got, expected, what, atol=ATOL, rtol=RTOL,
                            hint="Normalize over the last dimension (dim=-1, keepdim=True): "
                                 "x / sqrt(mean(x**2) + eps) * weight.")
    passed("rms_norm matches transformers' LlamaRMSNorm: no mean, no bias, one gain per dimension.")


# ---------------------------------------------------------------------------------------------------------------
# SwiGLU


@check(forbids=("course_utils.models.arch.swiglu", "course_utils.models.arch.SwiGLUFeedForward"))
def swiglu(student: Callable[..., Any]) -> None:
    """``swiglu(x, gate_weight, up_weight, down_weight)`` equals ``LlamaMLP`` with the same weights."""
    from transformers.models.llama.modeling_llama import LlamaMLP

    torch.manual_seed(1)
    config = arch.tiny_llama_config(hidden_size=64, intermediate_size=172)
    mlp = LlamaMLP(config).eval()
    x = torch.randn(2, 7, 64)
    with torch.no_grad():
        expected = mlp(x)
    gate, up, down = (mlp.gate_proj.weight.detach(), mlp.up_proj.weight.detach(), mlp.down_proj.weight.detach())
    what = "swiglu on x (2, 7, 64) with gate/up (172, 64) and down (64, 172)"
    got = _tensor(call(student, x.clone(), gate.clone(), up.clone(), down.clone(), what="swiglu"), what,
                  tuple(expected.shape))
    if _close(got, expected):
        passed("swiglu matches transformers' LlamaMLP: down(silu(gate(x)) * up(x)).")
        return
    act = torch.nn.functional
    variants = {
        "the SiLU is applied to the up projection instead of the gate: silu(gate(x)) * up(x), not "
        "gate(x) * silu(up(x))": (x @ gate.T) * act.silu(x @ up.T),
        "this uses GELU; Llama's gate uses SiLU, x * sigmoid(x)": act.gelu(x @ gate.T) * (x @ up.T),
        "this uses ReLU; Llama's gate uses SiLU, x * sigmoid(x)": act.relu(x @ gate.T) * (x @ up.T),
        "there is no activation: apply SiLU to the gate projection": (x @ gate.T) * (x @ up.T),
        "the gate is a plain sigmoid; SiLU is x * sigmoid(x)": torch.sigmoid(x @ gate.T) * (x @ up.T),
        "the two projections are added; SwiGLU multiplies them": act.silu(x @ gate.T) + (x @ up.T),
        "the up projection is missing: the gate's SiLU must multiply up(x)": act.silu(x @ gate.T),
    }
    for mistake, hidden in variants.items():
        if hidden.shape[-1] == down.shape[1] and _close(got, hidden @ down.T, 1e-4, 1e-4):
            raise CheckFailed(f"{what}: {mistake}.")
    expect_tensor_close(got, expected, what, atol=ATOL, rtol=RTOL,
                        hint="nn.Linear weights are (out_features, in_features): a projection is x @ W.T. "
                             "Compute down(silu(gate(x)) * up(x)).")


# ---------------------------------------------------------------------------------------------------------------
# RoPE


def _hf_rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    from transformers.models.llama import modeling_llama as hf

    config = arch.tiny_llama_config(hidden_size=x.shape[-1] * 2, n_heads=2, n_kv_heads=2,
                                    rope_parameters={"rope_type": "default", "rope_theta": theta})
    cos, sin = hf.LlamaRotaryEmbedding(config)(x, positions[None].expand(x.shape[0], -1))
    rotated, _ = hf.apply_rotary_pos_emb(x, x, cos, sin)
    return rotated


@check(forbids=(
    "course_utils.models.arch.rope", "course_utils.models.arch.apply_rope", "course_utils.models.arch.rope_cos_sin",
    "course_utils.models.arch.rotate_half", "course_utils.models.arch.rope_inverse_frequencies",
    "course_utils.models.arch.rope_frequencies"
))
def rope(student: Callable[..., Any]) -> None:
    """``rope(x, positions, theta)`` equals transformers' ``LlamaRotaryEmbedding`` + ``apply_rotary_pos_emb``."""
    torch.manual_seed(2)
    for shape, positions, theta, label in (
            ((1, 2, 6, 8), torch.arange(6), 10_000.0, "positions 0..5"),
            ((2, 3, 5, 16), torch.arange(7, 12), 10_000.0, "positions 7..11 (as with a cache)"),
            ((1, 4, 4, 32), torch.tensor([0, 100, 2000, 30000]), 500_000.0, "far-apart positions, theta 500,000")):
        x = torch.randn(*shape)
        expected = _hf_rope(x, positions, theta)
        what = f"rope on x {shape}, {label}"
        got = _tensor(call(student, x.clone(), positions.clone(), theta, what="rope"), what, shape)
        if _close(got, expected):
            continue
        inv_freq = arch.rope_inverse_frequencies(shape[-1], theta)
        angles = positions[:, None].float() * inv_freq
        cos, sin = angles.cos(), angles.sin()
        even, odd = x[..., 0::2], x[..., 1::2]
        interleaved = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)
        cos2, sin2 = arch.rope_cos_sin(inv_freq, positions)
        backwards = x * cos2 - arch.rotate_half(x) * sin2
        from_zero = _hf_rope(x, torch.arange(shape[2]), theta)
        if _close(got, interleaved, 1e-4, 1e-4):
            raise CheckFailed(f"{what}: you rotated neighbouring pairs (x[0], x[1]), (x[2], x[3]), ... The Hugging "
                              "Face Llama pairs dimension i with i + head_dim/2: rotate_half(x) = "
                              "cat(-x[..., d/2:], x[..., :d/2]), and cos/sin repeat each angle twice.")
        if _close(got, backwards, 1e-4, 1e-4):
            raise CheckFailed(f"{what}: the rotation goes the wrong way (the sign of the sine term is flipped): "
                              "x * cos + rotate_half(x) * sin with rotate_half(x) = cat(-second half, first half).")
        if not torch.equal(positions, torch.arange(shape[2])) and _close(got, from_zero, 1e-4, 1e-4):
            raise CheckFailed(f"{what}: the angles use 0, 1, 2, ... instead of the `positions` given. With a KV "
                              "cache the new tokens sit at later positions: angle = position * inv_freq.")
        if torch.equal(got, x):
            raise CheckFailed(f"{what}: x came back unchanged.")
        expect_tensor_close(got, expected, what, atol=ATOL, rtol=RTOL,
                            hint="inv_freq = 1 / theta ** (arange(0, d, 2) / d); angles = positions[:, None] * "
                                 "inv_freq, repeated twice along the last dimension; result = x * cos + "
                                 "rotate_half(x) * sin.")
    passed("rope matches transformers: pairs (i, i + d/2) turned by position x inv_freq.")


@check(forbids=("course_utils.models.arch.llama3_scale_frequencies", "course_utils.models.arch.rope_frequencies"))
def llama3_inverse_frequencies(student: Callable[..., Any]) -> None:
    """``llama3_inverse_frequencies(...)`` equals ``ROPE_INIT_FUNCTIONS["llama3"]`` on several configs."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cases = (("Llama 3.1 8B", 128, dict(arch.LLAMA31_ROPE)),
             ("Llama 3.2 1B", 64, dict(arch.LLAMA31_ROPE, factor=32.0)),
             ("a made-up config", 32, {"rope_type": "llama3", "rope_theta": 10_000.0, "factor": 4.0,
                                       "low_freq_factor": 2.0, "high_freq_factor": 8.0,
                                       "original_max_position_embeddings": 256}))
    for label, head_dim, rope in cases:
        config = arch.tiny_llama_config(hidden_size=head_dim * 2, n_heads=2, n_kv_heads=2, rope_parameters=rope,
                                        head_dim=head_dim)
        expected, _ = ROPE_INIT_FUNCTIONS["llama3"](config)
        kwargs = {k: rope[k] for k in ("factor", "low_freq_factor", "high_freq_factor",
                                       "original_max_position_embeddings")}
        args = ", ".join(f"{k}={v:g}" for k, v in kwargs.items())
        what = f"llama3_inverse_frequencies(head_dim={head_dim}, theta={rope['rope_theta']:g}, {args}) ({label})"
        got = _tensor(call(student, head_dim, rope["rope_theta"], **kwargs, what="llama3_inverse_frequencies"),
                      what, tuple(expected.shape))
        if _close(got, expected, 1e-7, 1e-5):
            continue
        base = arch.rope_inverse_frequencies(head_dim, rope["rope_theta"])
        wavelength = 2 * torch.pi / base
        long_wl = kwargs["original_max_position_embeddings"] / kwargs["low_freq_factor"]
        short_wl = kwargs["original_max_position_embeddings"] / kwargs["high_freq_factor"]
        two_bands = torch.where(wavelength > long_wl, base / kwargs["factor"], base)
        three_bands_no_blend = torch.where(wavelength < short_wl, base, base / kwargs["factor"])
        if _close(got, base, 1e-7, 1e-5):
            raise CheckFailed(f"{what}: these are the unscaled frequencies; apply the Llama 3 scaling to them.")
        if _close(got, base / kwargs["factor"], 1e-7, 1e-5):
            raise CheckFailed(f"{what}: every frequency is divided by factor (plain linear scaling). Llama 3 keeps "
                              "the fast ones (wavelength below original / high_freq_factor) unchanged.")
        if _close(got, base * kwargs["factor"], 1e-7, 1e-5) or _close(got, base * torch.where(
                wavelength > long_wl, kwargs["factor"], 1.0), 1e-7, 1e-5):
            raise CheckFailed(f"{what}: frequencies are multiplied by factor; divide them (slower rotations "
                              "stretch the positions the model has seen over a longer context).")
        if _close(got, two_bands, 1e-7, 1e-5) or _close(got, three_bands_no_blend, 1e-7, 1e-5):
            raise CheckFailed(f"{what}: the band between the two wavelengths is not blended. There, use "
                              "(1 - s) * f / factor + s * f with s = (original / wavelength - low_freq_factor) / "
                              "(high_freq_factor - low_freq_factor).")
        expect_tensor_close(got, expected, what, atol=1e-7, rtol=1e-5,
                            hint="wavelength = 2*pi / f. Above original/low_freq_factor: f / factor. Below "
                                 "original/high_freq_factor: f. In between: the smooth blend.")
    passed("llama3_inverse_frequencies matches transformers' 'llama3' RoPE for three configs.")


# ---------------------------------------------------------------------------------------------------------------
# Grouped-query attention


@check(forbids=(
    "course_utils.models.arch.grouped_query_attention", "course_utils.models.arch.repeat_kv",
    "course_utils.models.arch.GroupedQueryAttention",
    # scaled_dot_product_attention(..., enable_gqa=True, is_causal=True) is the whole exercise in one call
    *library_calls("this exercise asks you to write grouped-query attention yourself",
                   "torch.nn.functional.scaled_dot_product_attention", "torch.nn.MultiheadAttention"),
))
def grouped_query_attention(student: Callable[..., Any]) -> None:
    """The student's causal GQA, between ``LlamaAttention``'s projections, equals ``LlamaAttention``'s output."""
    from transformers.models.llama import modeling_llama as hf

    torch.manual_seed(3)
    config = arch.tiny_llama_config(hidden_size=64, n_heads=8, n_kv_heads=2)
    attention = hf.LlamaAttention(config, layer_idx=0).eval()
    batch, seq, d = 2, 9, config.head_dim
    x = torch.randn(batch, seq, 64)
    cos, sin = hf.LlamaRotaryEmbedding(config)(x, torch.arange(seq)[None].expand(batch, -1))
    with torch.no_grad():
        expected_full, _ = attention(x, position_embeddings=(cos, sin), attention_mask=None)
        q = attention.q_proj(x).view(batch, seq, 8, d).transpose(1, 2)
        k = attention.k_proj(x).view(batch, seq, 2, d).transpose(1, 2)
        v = attention.v_proj(x).view(batch, seq, 2, d).transpose(1, 2)
        q, k = hf.apply_rotary_pos_emb(q, k, cos, sin)

    def through_o_proj(heads: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return attention.o_proj(heads.transpose(1, 2).reshape(batch, heads.shape[2], 8 * d))

    what = f"grouped_query_attention(q {tuple(q.shape)}, k and v {tuple(k.shape)})"
    got = _tensor(call(student, q.clone(), k.clone(), v.clone(), what="grouped_query_attention"), what,
                  tuple(q.shape))
    if not _close(through_o_proj(got), expected_full):
        def attend(keys: torch.Tensor, values: torch.Tensor, causal: bool = True, scale: bool = True) -> torch.Tensor:
            scores = q @ keys.transpose(-2, -1) / (d ** 0.5 if scale else 1.0)
            if causal:
                scores = scores.masked_fill(~torch.ones(seq, seq, dtype=torch.bool).tril(), float("-inf"))
            return torch.softmax(scores, -1) @ values

        tiled = attend(k.repeat(1, 4, 1, 1), v.repeat(1, 4, 1, 1))
        expanded_k, expanded_v = arch.repeat_kv(k, 4), arch.repeat_kv(v, 4)
        if _close(got, tiled, 1e-4, 1e-4):
            raise CheckFailed(f"{what}: the key/value heads are tiled (k.repeat), so query head h uses key/value "
                              "head h % 2. Each key/value head serves neighbouring query heads: head h uses "
                              "h // n_rep (repeat_interleave along the heads dimension, or expand + reshape).")
        if _close(got, attend(expanded_k, expanded_v, causal=False), 1e-4, 1e-4):
            raise CheckFailed(f"{what}: there is no causal mask, so each token also attends to later tokens. Set "
                              "the scores above the diagonal to -inf before the softmax.")
        if _close(got, attend(expanded_k, expanded_v, scale=False), 1e-4, 1e-4):
            raise CheckFailed(f"{what}: the scores are not scaled; divide q @ k^T by sqrt(head_dim).")
        expect_tensor_close(through_o_proj(got), expected_full, f"{what}, after o_proj", atol=ATOL, rtol=RTOL,
                            hint="Repeat each key/value head n_heads // n_kv_heads times, softmax(q k^T / "
                                 "sqrt(d) + causal mask) @ v.")
    # With a cache, the queries are only the newest positions while the keys cover the whole sequence.
    last = 3
    what_cached = "grouped_query_attention with the last 3 queries against all 9 keys (generation with a cache)"
    got_last = _tensor(call(student, q[:, :, -last:].clone(), k.clone(), v.clone(), what="grouped_query_attention"),
                       what_cached, (batch, 8, last, d))
    expected_last = expected_full[:, -last:]
    if not _close(through_o_proj(got_last), expected_last):
        raise CheckFailed(f"{what_cached}: the outputs differ from the full attention's last 3 rows. When there "
                          "are fewer queries than keys, query i is at position seq_k - seq_q + i: build the mask "
                          "with torch.ones(seq_q, seq_k).tril(diagonal=seq_k - seq_q).")
    passed("grouped_query_attention matches transformers' LlamaAttention (8 query heads sharing 2 key/value "
           "heads), also with fewer queries than keys.")


# ---------------------------------------------------------------------------------------------------------------
# Experiment (medium): how far past its training window can the tiny Llama read?

RISE = 1.2  # "the loss rose": more than 20% above the lowest loss at an earlier position


def first_rise(losses: dict[int, float]) -> int | None:
    """The first position whose loss is more than 20% above the lowest loss measured before it (None: none)."""
    best = math.inf
    for position in sorted(losses):
        if losses[position] > RISE * best:
            return position
        best = min(best, losses[position])
    return None


@check()
def position_experiment(student: Callable[..., Any], probe: Any = None) -> None:
    """``where_loss_rises(loss_at)``: the first position where the tiny Llama's loss rises by 20%."""
    from course_utils.checks import experiments

    probe = probe or experiments.position_loss_probe()
    got, losses = measured_losses(student, probe, "where_loss_rises", "position", loss="loss",
                                  too_few="measured {n} positions; measure at least four.")
    expected = first_rise(losses)
    bucket = experiments.POSITION_BUCKET
    if got is None:
        if expected is not None:
            raise CheckFailed(f"where_loss_rises returned None, but in your table the loss at {expected} is more "
                              "than 20% above the lowest loss before it.")
        last = experiments.POSITION_LENGTH - bucket
        expect(max(losses) == last, f"where_loss_rises returned None after measuring up to {max(losses)}; measure "
                                    f"up to {last} before you conclude that the loss never rises.")
    else:
        expect(got in losses, f"where_loss_rises returned {got!r}, a position you did not measure: return one of "
                              f"{sorted(losses)}.")
        expect(got == expected, f"where_loss_rises returned {got}; in your table the first position whose loss "
                                f"is more than 20% above the lowest before it is {expected}.")
        expect(got - bucket in losses, f"where_loss_rises returned {got} without measuring {got - bucket}: the "
                                       "rise may have started earlier; measure the positions just before it.")
    shown = "never rises in the positions measured" if got is None else f"rises at position {got}"
    passed_experiment(f"where_loss_rises: the loss {shown}", probe)


# ---------------------------------------------------------------------------------------------------------------
# Debugging exercise: a padded batch whose mask lets positions see the future

DEBUG_TEXTS = ("Once upon a time, a little fox", "The little dog")


@check()
def attention_mask_4d_debugged(student: Callable[[torch.Tensor], Any]) -> None:
    """``attention_mask_4d(attention_mask)``: (batch, 1, seq, seq) booleans for a right-padded causal batch."""
    from course_utils.checks import experiments

    with experiments._quiet():  # no loading bar in the check's output
        model, tokenizer = experiments._tiny_llama()
    batch = tokenizer(list(DEBUG_TEXTS), return_tensors="pt", padding=True, padding_side="right")
    batch_size, seq = batch.input_ids.shape
    mask = _tensor(call(student, batch.attention_mask.clone(), what="attention_mask_4d"), "attention_mask_4d",
                   (batch_size, 1, seq, seq))
    expect(mask.dtype == torch.bool, f"attention_mask_4d: return booleans (True = may attend), got {mask.dtype}.")

    def batched(input_ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(input_ids=input_ids, attention_mask=mask).logits

    logits = batched(batch.input_ids)
    worst = {}
    with torch.no_grad():
        for row, text in enumerate(DEBUG_TEXTS):
            alone = model(input_ids=tokenizer(text, return_tensors="pt").input_ids).logits[0]
            worst[text] = (logits[row, : len(alone)] - alone).abs().max().item()
    if all(value < 1e-4 for value in worst.values()):
        passed("attention_mask_4d: padding hidden as keys, and each position sees itself and the past only.")
        return
    changed = batch.input_ids.clone()
    last = int(batch.attention_mask[0].sum()) - 1
    changed[0, last] = (changed[0, last] + 1) % model.config.vocab_size
    moved = (batched(changed)[0, :last] - logits[0, :last]).abs().max().item()
    shown = "; ".join(f"{text!r}: {value:.3g}" for text, value in worst.items())
    raise CheckFailed(
        f"attention_mask_4d: with your mask, the batch's logits at the real tokens differ from each text run alone "
        f"(largest difference {shown}; they should agree to float rounding). Changing only the last token of "
        f"{DEBUG_TEXTS[0]!r} moves the logits at its earlier positions by {moved:.3g}. Section 2's table tells "
        "what that means for a causal model; then look at which tokens each query of the padded text may see.")
