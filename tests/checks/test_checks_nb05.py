"""course_utils.checks.nb05: each check passes a right answer and fails, with a useful message, on wrong ones."""

from __future__ import annotations

import pytest
import torch

from course_utils.checks import CheckFailed, nb05


def _stub(*args, **kwargs):
    raise NotImplementedError()


# --- lora_forward ------------------------------------------------------------------------------------------------


def lora_forward_right(x, weight, bias, lora_A, lora_B, alpha, r):
    out = x @ weight.T + (bias if bias is not None else 0)
    return out + (alpha / r) * (x @ lora_A.T) @ lora_B.T


def _base(x, weight, bias):
    return x @ weight.T + (bias if bias is not None else 0)


def test_lora_forward_passes(capsys):
    nb05.lora_forward(lora_forward_right)
    assert capsys.readouterr().out.startswith("\u2713 lora_forward")


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (lambda x, w, b, A, B, alpha, r: _base(x, w, b), "frozen layer alone"),
    (lambda x, w, b, A, B, alpha, r: _base(x, w, b) + (x @ A.T) @ B.T, "not scaled"),
    (lambda x, w, b, A, B, alpha, r: _base(x, w, b) + (r / alpha) * (x @ A.T) @ B.T, "r / alpha"),
    (lambda x, w, b, A, B, alpha, r: _base(x, w, b) + alpha * (x @ A.T) @ B.T, "divide by r"),
    (lambda x, w, b, A, B, alpha, r: x @ w.T + (alpha / r) * (x @ A.T) @ B.T, "bias is missing"),
    (lambda x, w, b, A, B, alpha, r: _base(x, w, b) + (alpha / r) * (x @ B) @ A, "raised RuntimeError"),
    (lambda x, w, b, A, B, alpha, r: (_base(x, w, b) + (alpha / r) * (x @ A.T) @ B.T).tolist(), "torch.Tensor"),
    (lambda x, w, b, A, B, alpha, r: lora_forward_right(x, w, b, A, B, alpha, r) + 1e-3, "differ by up to"),
])
def test_lora_forward_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb05.lora_forward(wrong)


# --- lora_parameter_count ----------------------------------------------------------------------------------------


def count_right(shapes, r):
    return sum(r * (d + k) for d, k in shapes)


def test_lora_parameter_count_passes(capsys):
    nb05.lora_parameter_count(count_right)
    assert "131,072" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (lambda shapes, r: sum(d * k for d, k in shapes), "size of the full weights"),
    (lambda shapes, r: sum(r * d * k for d, k in shapes), "do not multiply"),
    (lambda shapes, r: r * (shapes[0][0] + shapes[0][1]), "first layer only"),
    (lambda shapes, r: sum(2 * r * d for d, _ in shapes), "square layers"),
    (lambda shapes, r: str(count_right(shapes, r)), "expected an integer"),
    (lambda shapes, r: count_right(shapes, r) + 1, "expected"),
])
def test_lora_parameter_count_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb05.lora_parameter_count(wrong)


def test_lora_parameter_count_accepts_a_whole_float():
    nb05.lora_parameter_count(lambda shapes, r: float(count_right(shapes, r)))


# --- make_batch --------------------------------------------------------------------------------------------------


def make_batch_right(pairs, pad_id, *, left=False, label_pad=-100, mask_prompt=True, shift=False, dtype=torch.long):
    width = max(len(p) + len(c) for p, c in pairs)
    ids = torch.full((len(pairs), width), pad_id, dtype=dtype)
    mask = torch.zeros((len(pairs), width), dtype=dtype)
    labels = torch.full((len(pairs), width), label_pad, dtype=dtype)
    for row, (p, c) in enumerate(pairs):
        seq = list(p) + list(c)
        lab = ([-100] * len(p) if mask_prompt else list(p)) + list(c)
        if shift:
            lab = lab[1:] + [-100]
        start = width - len(seq) if left else 0
        ids[row, start:start + len(seq)] = torch.tensor(seq)
        mask[row, start:start + len(seq)] = 1
        labels[row, start:start + len(seq)] = torch.tensor(lab)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_make_batch_passes(capsys):
    nb05.make_batch(make_batch_right)
    assert "-100" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (lambda pairs, pad: make_batch_right(pairs, pad, left=True), "padding is on the left"),
    (lambda pairs, pad: make_batch_right(pairs, pad, mask_prompt=False), "prompt positions"),
    (lambda pairs, pad: make_batch_right(pairs, pad, label_pad=pad), "padding positions must be -100"),
    (lambda pairs, pad: make_batch_right(pairs, pad, mask_prompt=False, label_pad=pad), "equal input_ids"),
    (lambda pairs, pad: make_batch_right(pairs, pad, shift=True), "shifted one position"),
    (lambda pairs, pad: make_batch_right(pairs, pad, dtype=torch.int32), "torch.long"),
    (lambda pairs, pad: {k: v for k, v in make_batch_right(pairs, pad).items() if k != "labels"}, "lacks"),
    (lambda pairs, pad: list(make_batch_right(pairs, pad).values()), "expected a dict"),
    (lambda pairs, pad: {**make_batch_right(pairs, pad), "attention_mask": torch.ones(3, 7, dtype=torch.long)},
     "attention_mask"),
])
def test_make_batch_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb05.make_batch(wrong)


# --- nf4_quantize ------------------------------------------------------------------------------------------------


def quantize_right(x, levels, block_size, *, signed_max=False, global_max=False):
    blocks = x.reshape(-1, block_size)
    if global_max:
        absmax = torch.full((blocks.shape[0],), x.abs().max().item())
    elif signed_max:
        absmax = blocks.amax(dim=1)
    else:
        absmax = blocks.abs().amax(dim=1)
    codes = (blocks / absmax[:, None])[..., None].sub(levels).abs().argmin(-1)
    return codes.reshape(-1).to(torch.uint8), absmax


def dequantize_right(codes, absmax, levels, block_size, shape):
    return (levels[codes.long()].reshape(-1, block_size) * absmax[:, None]).reshape(shape)


def test_nf4_passes(capsys):
    nb05.nf4_quantize(quantize_right, dequantize_right)
    assert "NF4 round trip" in capsys.readouterr().out


@pytest.mark.parametrize(("quantize", "dequantize", "message"), [
    (_stub, dequantize_right, "not written yet"),
    (quantize_right, _stub, "not written yet"),
    (lambda x, lv, bs: quantize_right(x, lv, bs, signed_max=True), dequantize_right, "ABSOLUTE"),
    (lambda x, lv, bs: quantize_right(x, lv, bs, global_max=True), dequantize_right, "whole tensor"),
    (lambda x, lv, bs: (quantize_right(x, lv, bs)[0] + 1, quantize_right(x, lv, bs)[1]), dequantize_right,
     "codes must be indices|codes differ"),
    (lambda x, lv, bs: quantize_right(x, lv, bs)[0], dequantize_right, "tuple"),
    (quantize_right, lambda c, a, lv, bs, shape: dequantize_right(c, a, lv, bs, shape).reshape(-1), "shape"),
    (quantize_right, lambda c, a, lv, bs, shape: lv[c.long()].reshape(shape), "nf4_dequantize"),
])
def test_nf4_fails(quantize, dequantize, message):
    with pytest.raises(CheckFailed, match=message):
        nb05.nf4_quantize(quantize, dequantize)


# --- the debugging exercise: sft_example --------------------------------------------------------------------------


def sft_example_buggy(tokenizer, prompt, completion):
    input_ids = tokenizer(prompt + completion)["input_ids"]
    return {"input_ids": input_ids, "labels": list(input_ids)}


def sft_example_fixed(tokenizer, prompt, completion, *, mask=True, end=True):
    prompt_ids = tokenizer(prompt)["input_ids"]
    input_ids = tokenizer(prompt + completion + (tokenizer.eos_token if end else ""))["input_ids"]
    labels = [-100] * len(prompt_ids) + input_ids[len(prompt_ids):] if mask else list(input_ids)
    return {"input_ids": input_ids, "labels": labels}


def test_sft_example_passes_the_fixed_version(capsys):
    nb05.sft_example_debugged(sft_example_fixed)
    assert capsys.readouterr().out.startswith("\u2713 sft_example")


@pytest.mark.parametrize(("wrong", "symptom"), [
    (_stub, "not written yet"),
    (sft_example_buggy, "writes on after its answer"),
    (lambda tok, p, c: sft_example_fixed(tok, p, c, mask=False), "the prompt included"),  # only the mask forgotten
    (lambda tok, p, c: sft_example_fixed(tok, p, c, end=False), "writes on after its answer"),  # only the end token
    (lambda tok, p, c: {"input_ids": tok(p + c + tok.eos_token)["input_ids"],  # the mask one token short
                        "labels": [-100] * (len(tok(p)["input_ids"]) - 1) + tok(p + c + tok.eos_token)["input_ids"][
                            len(tok(p)["input_ids"]) - 1:]}, "the prompt included"),
])
def test_sft_example_fails_on_the_bug_and_each_single_bug_with_a_symptom(wrong, symptom):
    with pytest.raises(CheckFailed, match=symptom) as failure:
        nb05.sft_example_debugged(wrong)
    assert "-100" not in str(failure.value) and "eos_token" not in str(failure.value)  # the symptom, not the fix
