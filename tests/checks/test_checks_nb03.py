"""course_utils.checks.nb03: each check passes a right answer and fails, with a useful message, on wrong ones."""

from __future__ import annotations

import math

import pytest
import torch

from course_utils.checks import CheckFailed, nb03


def _stub(*args, **kwargs):
    raise NotImplementedError()


# --- sliding_windows ---------------------------------------------------------------------------------------------
def windows_right(ids, max_length, stride):
    return [(ids[s:s + max_length], ids[s + 1:s + max_length + 1]) for s in range(0, len(ids) - max_length, stride)]


def test_sliding_windows_passes(capsys):
    nb03.sliding_windows(windows_right)
    nb03.sliding_windows(lambda ids, m, s: [(torch.tensor(x), torch.tensor(y)) for x, y in windows_right(ids, m, s)])
    assert "sliding_windows" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (lambda ids, m, s: [(ids[i:i + m], ids[i:i + m]) for i in range(0, len(ids) - m, s)], "NEXT"),
    (lambda ids, m, s: [(ids[i:i + m], ids[i + 1:i + m + 1]) for i in range(0, len(ids) - m + 1, s)], "exactly max_length"),
    (lambda ids, m, s: [(ids[i:i + m], ids[i + 1:i + m + 1]) for i in range(0, len(ids) - m, m)], "windows start at"),
    (lambda ids, m, s: [(ids[i:i + m], ids[i + 1:i + m + 1]) for i in range(0, len(ids) - m - 1, s)], "windows start at"),
    (lambda ids, m, s: 42, "pairs"),
])
def test_sliding_windows_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb03.sliding_windows(wrong)


# --- causal_attention --------------------------------------------------------------------------------------------
def attention_right(q, k, v):
    t = q.size(-2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    scores = scores.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def _attention(scale, mask="future", dim=-1):
    def attention(q, k, v):
        t = q.size(-2)
        scores = q @ k.transpose(-2, -1) / scale(q.size(-1))
        if mask == "future":
            scores = scores.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf"))
        elif mask == "past":
            scores = scores.masked_fill(torch.tril(torch.ones(t, t, dtype=torch.bool), -1), float("-inf"))
        return torch.softmax(scores, dim=dim).nan_to_num() @ v
    return attention


def test_causal_attention_passes(capsys):
    nb03.causal_attention(attention_right)
    assert "is_causal=True" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (_attention(lambda d: 1.0), "not scaled"),
    (_attention(lambda d: d), "square root"),
    (_attention(math.sqrt, mask=None), "no causal mask"),
    (_attention(math.sqrt, mask="past"), "hides the past"),
    (_attention(math.sqrt, dim=-2), "last\ndimension|last dimension"),
    (lambda q, k, v: v[..., :2], "expected shape"),
])
def test_causal_attention_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb03.causal_attention(wrong)


# --- sampling_probs ----------------------------------------------------------------------------------------------
def probs_right(logits, temperature, top_k):
    if top_k is not None:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.softmax(logits / temperature, dim=-1)


def test_sampling_probs_passes(capsys):
    nb03.sampling_probs(probs_right)
    assert "top-k" in capsys.readouterr().out


def _after_softmax(logits, temperature, top_k):
    probs = torch.softmax(logits / temperature, -1)
    if top_k is not None:
        probs = probs.masked_fill(probs < torch.topk(probs, top_k).values[-1], 0.0)
    return probs


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (lambda logits, t, k: probs_right(logits * t * t, t, k), "multiplied"),
    (lambda logits, t, k: probs_right(logits, t, None), "ignored"),
    (_after_softmax, "sum to"),
    (lambda logits, t, k: probs_right(logits, t, None if k is None else k + 1), "exactly"),
    (lambda logits, t, k: probs_right(logits, t + 0.1, k), "values differ"),
])
def test_sampling_probs_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb03.sampling_probs(wrong)


# --- cosine_lr ---------------------------------------------------------------------------------------------------
def cosine_right(step, max_steps, warmup_steps, max_lr, min_lr):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress))


def test_cosine_lr_passes(capsys):
    nb03.cosine_lr(cosine_right)
    assert "cosine_lr" in capsys.readouterr().out


def _no_clamp(step, max_steps, warmup_steps, max_lr, min_lr):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (lambda s, m, w, hi, lo: hi * s / w if s < w else cosine_right(s, m, w, hi, lo), r"step \+ 1"),
    (lambda s, m, w, hi, lo: cosine_right(s, m, w, hi, 0.0), "not to zero"),
    (_no_clamp, "stays at min_lr"),
    (lambda s, m, w, hi, lo: cosine_right(s, m, 0, hi, lo) if s >= w else cosine_right(s, m, w, hi, lo), "expected about"),
    (lambda s, m, w, hi, lo: "fast", "expected a number"),
])
def test_cosine_lr_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb03.cosine_lr(wrong)


# --- chinchilla_optimal ------------------------------------------------------------------------------------------
def test_chinchilla_optimal_passes(capsys):
    nb03.chinchilla_optimal(lambda c: (math.sqrt(c / 120), 20 * math.sqrt(c / 120)))
    assert "69B" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (lambda c: (20 * math.sqrt(c / 120), math.sqrt(c / 120)), "swapped"),
    (lambda c: (math.sqrt(c / 20), 20 * math.sqrt(c / 20)), "sqrt\\(6\\)"),
    (lambda c: (math.sqrt(c / 120), math.sqrt(c / 120) / 20), "20 TOKENS"),
    (lambda c: (math.sqrt(c / 6), math.sqrt(c / 6)), "n_params"),
    (lambda c: math.sqrt(c / 120), "pair"),
])
def test_chinchilla_optimal_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb03.chinchilla_optimal(wrong)


# --- the debugging exercise: validation_loss ---------------------------------------------------------------------
def _validation_loss(*, eval_mode=True, no_grad=True, restore=True):
    """The notebook's function, with each part of the fix on or off (all off: the colleague's version)."""
    from contextlib import nullcontext

    from course_utils.training.train import lm_loss

    def validation_loss(model, loader, max_batches=5):
        was_training = model.training
        if eval_mode:
            model.eval()
        losses = []
        with torch.no_grad() if no_grad else nullcontext():
            for i, (inputs, targets) in enumerate(loader):
                if i == max_batches:
                    break
                losses.append(lm_loss(model, inputs, targets).item())
        if restore:
            model.train(was_training)
        elif eval_mode:
            model.train()  # the usual slip: back to training, whatever mode the model came in
        return sum(losses) / len(losses)

    return validation_loss


def test_validation_loss_passes_the_fixed_version(capsys):
    nb03.validation_loss_debugged(_validation_loss())
    assert capsys.readouterr().out.startswith("\u2713 validation_loss")


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (_validation_loss(eval_mode=False, no_grad=False, restore=False), "what does dropout do"),  # the colleague's
    (_validation_loss(eval_mode=False), "what does dropout do"),
    (_validation_loss(no_grad=False), "recorded the autograd graph"),
    (_validation_loss(restore=False), "eval mode when your function got it, and in training mode when it gave"),
    (lambda model, loader, max_batches=5: _validation_loss()(model, loader, max_batches + 1), "batches per call"),
    (lambda model, loader, max_batches=5: "low", "expected a number"),
])
def test_validation_loss_fails_on_the_bug_and_each_single_slip(wrong, message):
    with pytest.raises(CheckFailed, match=message) as failure:
        nb03.validation_loss_debugged(wrong)
    assert "eval()" not in str(failure.value) and "no_grad" not in str(failure.value)  # symptoms, not the fix


def test_validation_loss_refuses_the_workbooks_evaluate():
    from course_utils.checks import DelegationError
    from course_utils.training import train

    with pytest.raises(DelegationError, match="course_utils.training.train.evaluate"):
        nb03.validation_loss_debugged(lambda model, loader, max_batches=5: train.evaluate(model, loader, "cpu",
                                                                                           max_batches))
