"""course_utils.checks.nb02: each check passes the reference answer and names the usual mistakes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from reference_copies import references

from course_utils.checks import CheckFailed, nb02
from course_utils.models import arch as arch_module

arch = references(arch_module)  # the traps would refuse answers built on arch itself


def _stub(*args, **kwargs):
    raise NotImplementedError()


def _fails(check, wrong, message):
    with pytest.raises(CheckFailed, match=message):
        check(wrong)


# --- causal_lm_loss -----------------------------------------------------------------------------------------------


def loss_right(logits, labels):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))


def test_causal_lm_loss_passes(capsys):
    nb02.causal_lm_loss(loss_right)
    assert capsys.readouterr().out.startswith("\u2713 causal_lm_loss")


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (lambda lg, lb: F.cross_entropy(lg.reshape(-1, lg.shape[-1]), lb.reshape(-1)), "without the shift"),
    (lambda lg, lb: F.cross_entropy(lg[:, 1:].reshape(-1, lg.shape[-1]), lb[:, :-1].reshape(-1)), "wrong way"),
    (lambda lg, lb: F.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]), lb[:, 1:].reshape(-1), reduction="sum"),
     "the sum over tokens"),
    (lambda lg, lb: F.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]), lb[:, 1:].reshape(-1),
                                    reduction="none"), "a single number"),
    (lambda lg, lb: loss_right(lg, lb).item(), "expected a torch.Tensor"),
    (lambda lg, lb: loss_right(lg, lb) * 1.1, "expected .* got"),
    # -100 taken as a real class: cross_entropy with another ignore_index crashes on it
    (lambda lg, lb: F.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]), lb[:, 1:].reshape(-1), ignore_index=-1),
     "raised"),
])
def test_causal_lm_loss_fails(wrong, message):
    _fails(nb02.causal_lm_loss, wrong, message)


# --- rms_norm -----------------------------------------------------------------------------------------------------


def test_rms_norm_passes(capsys):
    nb02.rms_norm(arch.rms_norm)
    assert "LlamaRMSNorm" in capsys.readouterr().out


def _mean_sq(x):
    return x.pow(2).mean(-1, keepdim=True)


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (lambda x, w, eps: w * (x - x.mean(-1, keepdim=True)) / torch.sqrt(
        _mean_sq(x - x.mean(-1, keepdim=True)) + eps), "subtracted the mean"),
    (lambda x, w, eps: x / torch.sqrt(_mean_sq(x) + eps), "not scaled by `weight`"),
    (lambda x, w, eps: w * x / (torch.sqrt(_mean_sq(x)) + eps), "after the square root"),
    (lambda x, w, eps: w * x / torch.sqrt(_mean_sq(x)), "eps is missing"),
    (lambda x, w, eps: w * x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps), "MEAN of the squares"),
    (lambda x, w, eps: w * x / torch.sqrt(x.pow(2).mean() + eps), "last dimension"),
    (lambda x, w, eps: (w * x / torch.sqrt(_mean_sq(x) + eps))[..., :-1], "expected shape"),
    (lambda x, w, eps: (w * x / torch.sqrt(_mean_sq(x) + eps)).tolist(), "expected a torch.Tensor"),
])
def test_rms_norm_fails(wrong, message):
    _fails(nb02.rms_norm, wrong, message)


# --- swiglu -------------------------------------------------------------------------------------------------------


def test_swiglu_passes(capsys):
    nb02.swiglu(arch.swiglu)
    assert "LlamaMLP" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (lambda x, g, u, d: ((x @ g.T) * F.silu(x @ u.T)) @ d.T, "applied to the up projection"),
    (lambda x, g, u, d: (F.gelu(x @ g.T) * (x @ u.T)) @ d.T, "uses GELU"),
    (lambda x, g, u, d: (F.relu(x @ g.T) * (x @ u.T)) @ d.T, "uses ReLU"),
    (lambda x, g, u, d: ((x @ g.T) * (x @ u.T)) @ d.T, "no activation"),
    (lambda x, g, u, d: (torch.sigmoid(x @ g.T) * (x @ u.T)) @ d.T, "plain sigmoid"),
    (lambda x, g, u, d: (F.silu(x @ g.T) + (x @ u.T)) @ d.T, "added"),
    (lambda x, g, u, d: F.silu(x @ g.T) @ d.T, "up projection is missing"),
    (lambda x, g, u, d: (F.silu(x @ g) * (x @ u)) @ d, "raised RuntimeError"),
    (lambda x, g, u, d: arch.swiglu(x, g, u, d) + 0.01, "values differ"),
])
def test_swiglu_fails(wrong, message):
    _fails(nb02.swiglu, wrong, message)


# --- rope ---------------------------------------------------------------------------------------------------------


def test_rope_passes(capsys):
    nb02.rope(arch.rope)
    assert capsys.readouterr().out.startswith("\u2713 rope")


def _interleaved(x, positions, theta=10_000.0):
    inv = arch.rope_inverse_frequencies(x.shape[-1], theta)
    angles = positions[:, None].float() * inv
    cos, sin = angles.cos(), angles.sin()
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


def _backwards(x, positions, theta=10_000.0):
    cos, sin = arch.rope_cos_sin(arch.rope_inverse_frequencies(x.shape[-1], theta), positions)
    return x * cos - arch.rotate_half(x) * sin


def _wrong_frequencies(x, positions, theta=10_000.0):
    d = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, d // 2) / d)  # i / d instead of 2i / d
    cos, sin = arch.rope_cos_sin(inv, positions)
    return arch.apply_rope(x, cos, sin)


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (_interleaved, "neighbouring pairs"),
    (_backwards, "wrong way"),
    (lambda x, p, theta=10_000.0: arch.rope(x, torch.arange(x.shape[2]), theta), "instead of the `positions`"),
    (lambda x, p, theta=10_000.0: x, "unchanged"),
    (lambda x, p, theta=10_000.0: arch.rope(x, p, 10_000.0), "theta 500,000.*values differ"),
    (_wrong_frequencies, "values differ"),
])
def test_rope_fails(wrong, message):
    _fails(nb02.rope, wrong, message)


# --- llama3_inverse_frequencies -----------------------------------------------------------------------------------


def llama3_right(head_dim, theta, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings):
    return arch.llama3_scale_frequencies(arch.rope_inverse_frequencies(head_dim, theta), factor, low_freq_factor,
                                         high_freq_factor, original_max_position_embeddings)


def test_llama3_passes(capsys):
    nb02.llama3_inverse_frequencies(llama3_right)
    assert "three configs" in capsys.readouterr().out


def _two_bands(head_dim, theta, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings):
    base = arch.rope_inverse_frequencies(head_dim, theta)
    wavelength = 2 * math.pi / base
    return torch.where(wavelength > original_max_position_embeddings / low_freq_factor, base / factor, base)


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (lambda hd, th, **kw: arch.rope_inverse_frequencies(hd, th), "unscaled"),
    (lambda hd, th, factor, **kw: arch.rope_inverse_frequencies(hd, th) / factor, "plain linear scaling"),
    (lambda hd, th, factor, **kw: arch.rope_inverse_frequencies(hd, th) * factor, "multiplied by factor"),
    (_two_bands, "not blended"),
    (lambda hd, th, **kw: arch.rope_inverse_frequencies(hd, th)[:-1], "expected shape"),
    (lambda hd, th, **kw: llama3_right(hd, th, **kw) * 1.01, "values differ"),
])
def test_llama3_fails(wrong, message):
    _fails(nb02.llama3_inverse_frequencies, wrong, message)


# --- grouped_query_attention --------------------------------------------------------------------------------------


def test_gqa_passes(capsys):
    nb02.grouped_query_attention(arch.grouped_query_attention)
    assert "LlamaAttention" in capsys.readouterr().out


def _attend(q, k, v, *, tile=False, causal=True, scale=True, offset=True):
    n_rep = q.shape[1] // k.shape[1]
    if tile:
        k, v = k.repeat(1, n_rep, 1, 1), v.repeat(1, n_rep, 1, 1)
    else:
        k, v = arch.repeat_kv(k, n_rep), arch.repeat_kv(v, n_rep)
    scores = q @ k.transpose(-2, -1) / (math.sqrt(q.shape[-1]) if scale else 1.0)
    seq_q, seq_k = scores.shape[-2:]
    if causal:
        mask = torch.ones(seq_q, seq_k, dtype=torch.bool).tril(diagonal=seq_k - seq_q if offset else 0)
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, -1) @ v


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (lambda q, k, v: _attend(q, k, v, tile=True), r"tiled \(k.repeat\)"),
    (lambda q, k, v: _attend(q, k, v, causal=False), "no causal mask"),
    (lambda q, k, v: _attend(q, k, v, scale=False), "not scaled"),
    (lambda q, k, v: _attend(q, k, v, offset=False), "fewer queries than keys"),
    (lambda q, k, v: _attend(q, k, v).transpose(1, 2), "expected shape"),
    (lambda q, k, v: q @ k.transpose(-2, -1), "raised RuntimeError"),
])
def test_gqa_fails(wrong, message):
    _fails(nb02.grouped_query_attention, wrong, message)


# --- the debugging exercise: attention_mask_4d --------------------------------------------------------------------


def mask_fixed(attention_mask):
    seq = attention_mask.shape[1]
    return attention_mask.bool()[:, None, None, :] & torch.ones(seq, seq, dtype=torch.bool).tril()


def test_attention_mask_4d_passes_the_fixed_version(capsys):
    nb02.attention_mask_4d_debugged(mask_fixed)
    assert capsys.readouterr().out.startswith("\u2713 attention_mask_4d")


@pytest.mark.parametrize("wrong", [
    _stub,
    lambda m: m.bool()[:, None, None, :].expand(-1, 1, m.shape[1], m.shape[1]),  # the colleague's: no causal part
    lambda m: m.bool()[:, None, None, :] & torch.ones(m.shape[1], m.shape[1], dtype=torch.bool).triu(),
    lambda m: m.bool()[:, None, None, :] & torch.ones(m.shape[1], m.shape[1], dtype=torch.bool).tril(-1),
    lambda m: mask_fixed(m).float(),
])
def test_attention_mask_4d_fails_on_the_bugs_with_a_symptom(wrong):
    with pytest.raises(CheckFailed) as failure:
        nb02.attention_mask_4d_debugged(wrong)
    assert "tril" not in str(failure.value)
