"""course_utils.checks.nb04: each check passes a right answer and fails, with a useful message, on wrong ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_utils.checks import CheckFailed, nb04


def _stub(*args, **kwargs):
    raise NotImplementedError()


# --- kd_loss ------------------------------------------------------------------------------------------------------


def _kd(student_logits, teacher_logits, labels, alpha, temperature, *, square=True, direction="forward",
        soften_teacher=True, check_vocab=True, flatten=True, swap_alpha=False, reduction="batchmean"):
    if check_vocab and student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise ValueError(f"vocabularies differ: student {student_logits.shape[-1]}, teacher {teacher_logits.shape[-1]}")
    vocab = student_logits.shape[-1]
    s, t = (student_logits.reshape(-1, vocab), teacher_logits.reshape(-1, vocab)) if flatten else (
        student_logits, teacher_logits)
    log_s = F.log_softmax(s / temperature, -1)
    log_t = F.log_softmax(t / (temperature if soften_teacher else 1.0), -1)
    if direction == "forward":
        kl = F.kl_div(log_s, log_t, log_target=True, reduction=reduction)
    else:
        kl = F.kl_div(log_t, log_s, log_target=True, reduction=reduction)
    soft = kl * (temperature**2 if square else 1.0)
    hard = F.cross_entropy(student_logits.reshape(-1, vocab), labels.reshape(-1))
    if swap_alpha:
        return alpha * hard + (1 - alpha) * soft
    return (1 - alpha) * hard + alpha * soft


def test_kd_loss_passes(capsys):
    nb04.kd_loss(_kd)
    assert "T**2 included" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (lambda *a: _kd(*a, square=False), "missing the T\\*\\*2 factor"),
    (lambda *a: _kd(*a, direction="reverse"), "wrong way"),
    (lambda *a: _kd(*a, soften_teacher=False), "teacher's logits are not divided by T"),
    (lambda *a: _kd(*a, flatten=False), "batch size only"),
    pytest.param(lambda *a: _kd(*a, reduction="mean"), "averaged over the vocabulary",
                 marks=pytest.mark.filterwarnings("ignore:reduction")),
    (lambda *a: _kd(*a, swap_alpha=True), "alpha weights the wrong term"),
    (lambda *a: _kd(*a).item(), "without a gradient"),
    (lambda *a: _kd(*a).detach(), "without a gradient"),
    (lambda *a: _kd(*a, check_vocab=False), "raised RuntimeError"),
    (lambda *a: _kd(*a) * 1.01, "expected .* got"),
    (lambda *a: print(_kd(*a)), "expected a number"),
])
def test_kd_loss_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb04.kd_loss(wrong)


def test_kd_loss_wants_both_sizes_in_the_error():
    def vague(s, t, y, alpha, temperature):
        if s.shape[-1] != t.shape[-1]:
            raise ValueError("bad shapes")
        return _kd(s, t, y, alpha, temperature)

    with pytest.raises(CheckFailed, match="say both sizes"):
        nb04.kd_loss(vague)


def test_kd_loss_must_refuse_mismatched_vocabularies():
    def padded(s, t, y, alpha, temperature):  # silently pads the smaller vocabulary: no error at all
        if s.shape[-1] != t.shape[-1]:
            return torch.tensor(0.0, requires_grad=True)
        return _kd(s, t, y, alpha, temperature)

    with pytest.raises(CheckFailed, match="accepted a student with 10 logits"):
        nb04.kd_loss(padded)


# --- layer_map ----------------------------------------------------------------------------------------------------


def _spread(t, s):
    return [round(i * (t - 1) / (s - 1)) for i in range(s)] if s > 1 else [0]


def test_layer_map_passes(capsys):
    nb04.layer_map(_spread)
    nb04.layer_map(lambda t, s: [int(i * (t - 1) / (s - 1) + 0.5) for i in range(s)])
    assert "[0, 2, 4, 7, 9, 11]" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (lambda t, s: [(i + 1) * t // s - 1 for i in range(s)], "drops layer 0"),
    (lambda t, s: [i + 1 for i in _spread(t, s)], "start at 0"),
    (lambda t, s: [i * (t - 1) // (s - 1) for i in range(s)], "rounded down"),
    (lambda t, s: [i * (t // s) for i in range(s)], "teacher layer 3"),
    (lambda t, s: list(range(t)), "expected 2 indices"),
    (lambda t, s: None, "a list of layer indices"),
])
def test_layer_map_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb04.layer_map(wrong)


# --- top1_agreement -----------------------------------------------------------------------------------------------


def _agree(s, t, mask=None):
    same = s.argmax(-1) == t.argmax(-1)
    if mask is not None:
        same = same[mask]
    return same.float().mean()


def test_top1_agreement_passes(capsys):
    nb04.top1_agreement(_agree)
    nb04.top1_agreement(lambda s, t, mask=None: _agree(s, t, mask).item())
    assert "first choice" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (lambda s, t, mask=None: 100 * _agree(s, t, mask), "percentage"),
    (lambda s, t, mask=None: (s.argmax(-1) == t.argmax(-1)).sum(), "number of agreeing positions"),
    (lambda s, t, mask=None: (s == t).float().mean(), "not the logits themselves"),
    (lambda s, t, mask=None: _agree(s, t), "as without the mask"),
    (lambda s, t, mask=None: _agree(s.transpose(0, -1), t.transpose(0, -1), None if mask is None else mask.T),
     "expected|last dimension"),
])
def test_top1_agreement_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb04.top1_agreement(wrong)


# --- kl_divergence ------------------------------------------------------------------------------------------------


def _kl(p, q):
    return (F.softmax(p, -1) * (F.log_softmax(p, -1) - F.log_softmax(q, -1))).sum(-1)


def test_kl_divergence_passes(capsys):
    nb04.kl_divergence(_kl)
    assert "KL(p || q)" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (lambda p, q: _kl(q, p), "other direction"),
    (lambda p, q: (F.softmax(p, -1) * (p - q)).sum(-1), "logits as log-probabilities"),
    (lambda p, q: _kl(p, q).sum(), "got one number"),
    (lambda p, q: _kl(p, q).tolist(), "expected a tensor"),
    (lambda p, q: _kl(p, q)[:2], "expected shape"),
    (lambda p, q: _kl(p, q) + 0.01, "expected \\["),
])
def test_kl_divergence_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb04.kl_divergence(wrong)


# --- the debugging exercise: soft_loss ----------------------------------------------------------------------------


def soft_loss_buggy(student_logits, teacher_logits, temperature):
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")


def soft_loss_fixed(student_logits, teacher_logits, temperature, *, square=True, flatten=True):
    vocab = student_logits.shape[-1]
    s, t = (student_logits.reshape(-1, vocab), teacher_logits.reshape(-1, vocab)) if flatten else (
        student_logits, teacher_logits)
    log_q = F.log_softmax(s / temperature, dim=-1)
    log_p = F.log_softmax(t / temperature, dim=-1)
    return (temperature**2 if square else 1.0) * F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")


def test_soft_loss_passes_the_fixed_version(capsys):
    nb04.soft_loss_debugged(soft_loss_fixed)
    assert capsys.readouterr().out.startswith("\u2713 soft_loss")


@pytest.mark.parametrize(("wrong", "symptom"), [
    (_stub, "not written yet"),
    (soft_loss_buggy, "split into rows"),
    (lambda s, t, temp: soft_loss_fixed(s, t, temp, square=False), "right at T = 1"),  # only the T^2 dropped
    (lambda s, t, temp: soft_loss_fixed(s, t, temp, flatten=False), "split into rows"),  # only the batchmean
    (lambda s, t, temp: soft_loss_fixed(s, t, temp).detach(), "without a gradient"),
])
def test_soft_loss_fails_on_the_bug_and_each_single_bug_with_a_symptom(wrong, symptom):
    with pytest.raises(CheckFailed, match=symptom) as failure:
        nb04.soft_loss_debugged(wrong)
    assert "T**2" not in str(failure.value) and "flatten" not in str(failure.value)  # the symptom, not the fix
