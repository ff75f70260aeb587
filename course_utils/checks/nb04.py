"""Checks for Notebook 04 (knowledge distillation): the KD loss, the layer map, top-1 agreement, KL direction,
the experiment that compares temperatures over seeds, and the debugging exercise of the soft-target loss."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from course_utils.checks import (
    CheckFailed,
    call,
    check,
    expect,
    library_calls,
    passed,
    passed_experiment,
    run_experiment,
)
from course_utils.training import distill


def _scalar(value: object, what: str) -> float:
    if isinstance(value, torch.Tensor):
        expect(value.numel() == 1, f"{what}: expected one number (a 0-dimensional tensor), got a tensor of shape "
                                   f"{tuple(value.shape)}. Average over the tokens.")
        result = value.item()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        result = float(value)
    else:
        raise CheckFailed(f"{what}: expected a number, got {type(value).__name__} {value!r}. Return the value, "
                          "do not print it.")
    expect(math.isfinite(result), f"{what}: expected a finite number, got {result!r}.")
    return result


def _near(a: float, b: float, rel: float = 1e-4) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-7)


# ---------------------------------------------------------------------------------------------- the KD loss
def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of KL(p || q), both given as (..., vocab) logits."""
    return distill.kl_divergence(p_logits.reshape(-1, p_logits.shape[-1]), q_logits.reshape(-1, q_logits.shape[-1])).mean()


def _kd_mistakes(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, alpha: float, temp: float) -> list[tuple[float, str]]:
    """Values that usual mistakes produce, each with what to tell the student."""
    ce = F.cross_entropy(s.reshape(-1, s.shape[-1]), y.reshape(-1)).item()
    kl_t = _kl(t / temp, s / temp).item()
    tokens_per_row = s.shape[0] if s.dim() == 3 else 1
    mistakes = [
        ((1 - alpha) * ce + alpha * kl_t, "the soft term is missing the T**2 factor: softening by T shrinks its "
                                          "gradients by 1/T**2, so multiply the KL by temperature**2."),
        ((1 - alpha) * ce + alpha * temp * kl_t, "the soft term is multiplied by T, not T**2."),
        ((1 - alpha) * ce + alpha * temp**2 * _kl(s / temp, t / temp).item(),
         "the KL goes the wrong way: KD uses KL(teacher_T || student_T), the teacher's probabilities weighting "
         "the log-ratio. With F.kl_div the FIRST argument is the student's log-probabilities and the second the "
         "teacher's (log_target=True) or probabilities."),
        ((1 - alpha) * ce + alpha * temp**2 * _kl(t, s / temp).item(),
         "the teacher's logits are not divided by T: soften both distributions with the same temperature."),
        ((1 - alpha) * ce + alpha * temp**2 * _kl(t / temp, s).item(),
         "the student's logits are not divided by T: soften both distributions with the same temperature."),
        (alpha * ce + (1 - alpha) * temp**2 * kl_t, "alpha weights the wrong term: alpha multiplies the soft "
                                                    "(teacher) term and 1 - alpha the cross-entropy on labels."),
        ((1 - alpha) * ce + alpha * temp**2 * kl_t * s.shape[-2] if tokens_per_row > 1 else math.nan,
         "the KL is divided by the batch size only. F.kl_div(..., reduction='batchmean') divides by the first "
         "dimension: flatten the logits to (tokens, vocab) first so it averages over every token."),
        ((1 - alpha) * ce + alpha * temp**2 * kl_t / s.shape[-1],
         "the KL is averaged over the vocabulary too (reduction='mean'): sum over the vocabulary and average "
         "over tokens (reduction='batchmean' on (tokens, vocab) tensors)."),
    ]
    return [(value, hint) for value, hint in mistakes if math.isfinite(value)]


@check(forbids=(
    "course_utils.training.distill.distillation_loss", "course_utils.training.distill.kd_loss_fn",
    "course_utils.training.distill.kl_divergence"
))
def kd_loss(student: Callable[..., torch.Tensor]) -> None:
    """``kd_loss(student_logits, teacher_logits, labels, alpha, temperature)`` against the workbook's reference."""
    g = torch.Generator().manual_seed(4)
    cases = [(0.5, 2.0), (0.0, 1.0), (1.0, 4.0), (0.3, 3.0), (0.9, 1.0)]
    for alpha, temp in cases:
        s = (2 * torch.randn(3, 5, 17, generator=g)).requires_grad_()
        t = 3 * torch.randn(3, 5, 17, generator=g)
        y = torch.randint(0, 17, (3, 5), generator=g)
        what = f"kd_loss on logits of shape (3, 5, 17) with alpha={alpha}, temperature={temp}"
        got_tensor = call(student, s, t, y, alpha, temp, what="kd_loss")
        got = _scalar(got_tensor, what)
        expected = distill.distillation_loss(s.detach(), t, y, alpha=alpha, temperature=temp).item()
        if not _near(got, expected):
            for value, hint in _kd_mistakes(s.detach(), t, y, alpha, temp):
                if _near(got, value):
                    raise CheckFailed(f"{what}: expected {expected:.6g}, got {got:.6g}: {hint}")
            raise CheckFailed(f"{what}: expected {expected:.6g}, got {got:.6g}. Compute (1 - alpha) * "
                              "cross_entropy(student, labels) + alpha * T**2 * KL(softmax(teacher/T) || "
                              "softmax(student/T)), averaged over all tokens.")
        expect(isinstance(got_tensor, torch.Tensor) and got_tensor.requires_grad,
               f"{what}: the value is right, but it came back as {type(got_tensor).__name__} without a gradient. "
               "Return the tensor itself (no .item(), no .detach()) so that loss.backward() can train the student.")
    try:
        student(torch.randn(4, 10), torch.randn(4, 12), torch.tensor([0, 1, 2, 3]), 0.5, 2.0)
    except NotImplementedError:
        raise CheckFailed("kd_loss is not written yet: replace `raise NotImplementedError()` with your code.") from None
    except ValueError as exc:
        expect("10" in str(exc) and "12" in str(exc),
               f"kd_loss raised ValueError({str(exc)!r}) for a student with 10 logits and a teacher with 12: right "
               "error, but say both sizes in the message so the user knows what to fix.")
    except Exception as exc:  # noqa: BLE001 - the point is which error comes back
        raise CheckFailed(f"kd_loss with a 10-token student and a 12-token teacher raised {type(exc).__name__}: "
                          f"{exc}. Check the vocabulary sizes first and raise a ValueError that names both.") from exc
    else:
        raise CheckFailed("kd_loss accepted a student with 10 logits per token and a teacher with 12: token i must "
                          "mean the same thing to both, so raise ValueError when the last dimensions differ.")
    passed("kd_loss matches the reference, T**2 included, and refuses mismatched vocabularies.")


# --------------------------------------------------------------------------------------------- the layer map
@check(forbids=("course_utils.training.distill.teacher_layers_for_student",))
def layer_map(student: Callable[[int, int], list[int]]) -> None:
    """``layer_map(num_teacher_layers, num_student_layers)``: evenly spread teacher layers, first and last included."""
    # An even number of student layers never puts a position exactly halfway, so every rounding to the nearest
    # integer agrees (Python's round() rounds halves to even).
    cases = [(4, 2), (12, 6), (32, 16), (8, 4), (28, 16), (5, 5), (30, 10)]
    for n_teacher, n_student in cases:
        what = f"layer_map({n_teacher}, {n_student})"
        got = call(student, n_teacher, n_student, what="layer_map")
        expected = distill.teacher_layers_for_student(n_teacher, n_student, rule="spread")
        try:
            got = [int(i) for i in got]
        except (TypeError, ValueError):
            raise CheckFailed(f"{what}: expected a list of layer indices such as {expected}, got {got!r}.") from None
        if got == expected:
            continue
        expect(len(got) == n_student, f"{what}: expected {n_student} indices (one per student layer), got "
                                      f"{len(got)}: {got}.")
        if got == distill.teacher_layers_for_student(n_teacher, n_student, rule="last"):
            raise CheckFailed(f"{what}: expected {expected}, got {got}: that keeps the last layer of each group "
                              "and drops layer 0, the one that reads the embeddings (the table above shows what "
                              "that costs). Spread the positions from layer 0 to the last layer.")
        if got == [i + 1 for i in expected]:
            raise CheckFailed(f"{what}: expected {expected}, got {got}: layer indices start at 0, so a "
                              f"{n_teacher}-layer teacher has layers 0 to {n_teacher - 1}.")
        if got[0] != 0 or got[-1] != n_teacher - 1:
            raise CheckFailed(f"{what}: expected {expected}, got {got}: the first student layer must copy teacher "
                              f"layer 0 and the last one teacher layer {n_teacher - 1}.")
        truncated = [i * (n_teacher - 1) // (n_student - 1) for i in range(n_student)]
        if got == truncated:
            raise CheckFailed(f"{what}: expected {expected}, got {got}: the positions were rounded down. Round "
                              "them to the nearest integer (round(), or int(x + 0.5)).")
        raise CheckFailed(f"{what}: expected {expected}, got {got}. Student layer i copies teacher layer "
                          "i * (num_teacher_layers - 1) / (num_student_layers - 1), rounded to the nearest integer.")
    passed("layer_map: layers spread from the first to the last; for BERT-base -> DistilBERT that is "
           "[0, 2, 4, 7, 9, 11].")


# ---------------------------------------------------------------------------------------- top-1 agreement
@check(forbids=("course_utils.training.distill.top1_agreement",))
def top1_agreement(student: Callable[..., float]) -> None:
    """``top1_agreement(student_logits, teacher_logits, mask=None)``: fraction of positions with the same argmax."""
    teacher = torch.tensor([[[0.0, 5.0, 1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 2.0], [1.0, 2.0, 0.0]]])
    pupil = torch.tensor([[[0.0, 1.0, 0.5], [0.0, 4.0, 0.0], [1.0, 0.0, 9.0], [0.0, 3.0, 1.0]]])
    what = "top1_agreement on 4 positions where the argmax agrees at positions 0, 2 and 3"
    got = _scalar(call(student, pupil, teacher, what="top1_agreement"), what)
    if _near(got, 75.0):
        raise CheckFailed(f"{what}: got {got:g}, a percentage; return a fraction between 0 and 1 (0.75).")
    if _near(got, 3.0):
        raise CheckFailed(f"{what}: got {got:g}, the number of agreeing positions; divide by the number of "
                          "positions compared.")
    if _near(got, (pupil == teacher).float().mean().item()) or _near(got, 0.0):
        raise CheckFailed(f"{what}: got {got:g}. Compare the argmax over the vocabulary (the last dimension) of "
                          "each, not the logits themselves.")
    expect(_near(got, 0.75), f"{what}: expected 0.75, got {got:g}. Take argmax(-1) of both and compare.")
    mask = torch.tensor([[True, True, False, False]])
    what_mask = "top1_agreement with mask=[True, True, False, False] (only positions 0 and 1 count)"
    got = _scalar(call(student, pupil, teacher, mask, what="top1_agreement"), what_mask)
    expect(not _near(got, 0.75), f"{what_mask}: got 0.75, as without the mask: count only the positions where "
                                 "the mask is True.")
    expect(_near(got, 0.5), f"{what_mask}: expected 0.5, got {got:g}.")
    g = torch.Generator().manual_seed(7)
    for shape in [(2, 9, 30), (5, 30)]:
        s, t = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
        t[..., 0] += 1.5  # make agreement common enough to be measured
        s[..., 0] += 1.5
        expected = distill.top1_agreement(s, t)
        what = f"top1_agreement on random logits of shape {shape}"
        got = _scalar(call(student, s, t, what="top1_agreement"), what)
        expect(_near(got, expected), f"{what}: expected {expected:.4f}, got {got:.4f}. The argmax must be over "
                                     "the last dimension (the vocabulary), whatever the number of dimensions.")
    passed("top1_agreement: the fraction of positions where the student's first choice is the teacher's.")


# --------------------------------------------------------------------------------------------- KL direction
@check(forbids=("course_utils.training.distill.kl_divergence",
                *library_calls("this exercise asks you to write the KL divergence yourself",
                               "torch.nn.functional.kl_div", "torch.kl_div")))
def kl_divergence(student: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """``kl_divergence(p_logits, q_logits)``: KL(p || q) over the last dimension, one value per row."""
    g = torch.Generator().manual_seed(11)
    p, q = 2 * torch.randn(4, 9, generator=g), 2 * torch.randn(4, 9, generator=g)
    expected = distill.kl_divergence(p, q)
    got = call(student, p, q, what="kl_divergence")
    what = "kl_divergence(p_logits, q_logits) for 4 rows of 9 outcomes"
    if not isinstance(got, torch.Tensor):
        raise CheckFailed(f"{what}: expected a tensor with one KL per row, got {type(got).__name__}.")
    if got.numel() == 1 and got.numel() != expected.numel():
        raise CheckFailed(f"{what}: got one number, expected one KL per row (shape {tuple(expected.shape)}): sum "
                          "over the last dimension only.")
    expect(tuple(got.shape) == tuple(expected.shape),
           f"{what}: expected shape {tuple(expected.shape)} (one value per row), got {tuple(got.shape)}.")
    got = got.detach().float()
    if torch.allclose(got, expected, atol=1e-5, rtol=1e-4):
        passed("kl_divergence: KL(p || q) = sum of p * (log p - log q), zero only when q equals p.")
        return
    if torch.allclose(got, distill.kl_divergence(q, p), atol=1e-5, rtol=1e-4):
        raise CheckFailed(f"{what}: you computed KL(q || p), the other direction. KL(p || q) weights log p - log q "
                          "by p's probabilities. (F.kl_div(input, target) computes KL(target || input).)")
    naive = (p.softmax(-1) * (p - q)).sum(-1)
    if torch.allclose(got, naive, atol=1e-5, rtol=1e-4):
        raise CheckFailed(f"{what}: you used the logits as log-probabilities. Take log_softmax of each first.")
    raise CheckFailed(f"{what}: expected {expected.tolist()}, got {got.tolist()}. KL(p || q) = sum over outcomes of "
                      "p * (log p - log q), with p = softmax(p_logits) and log q = log_softmax(q_logits).")


# ------------------------------------------------------------------------------ experiment: the temperature
def temperature_verdict(perplexities: dict[float, list[float]]) -> tuple[float, bool]:
    """(the temperature with the lowest mean perplexity, whether it beats every other by more than the spread).

    The spread of a temperature is max - min over its seeds; the best "is decided" when its mean is lower than
    every other temperature's mean by more than the larger of the two spreads.
    """
    means = {t: sum(values) / len(values) for t, values in perplexities.items()}
    spread = {t: max(values) - min(values) for t, values in perplexities.items()}
    best = min(means, key=means.__getitem__)
    decided = all(means[t] - means[best] > max(spread[t], spread[best]) for t in means if t != best)
    return best, decided


@check()
def temperature_experiment(student: Callable[..., object], probe: object = None) -> None:
    """``best_temperature(perplexity_after)`` -> ``(temperature, decided)`` over at least three seeds each."""
    from course_utils.checks import experiments

    probe = probe or experiments.distillation_probe()
    got = run_experiment(student, probe, "best_temperature")
    runs: dict[float, list[float]] = {}
    for row in probe.rows:
        expect(math.isfinite(row["perplexity"]) and row["perplexity"] >= 1, f"an odd perplexity: {row}")
        runs.setdefault(row["temperature"], []).append(row["perplexity"])
    enough = {t: values for t, values in runs.items() if len(values) >= 3}
    expect(len(enough) >= 3, f"best_temperature ran {', '.join(f'T={t:g}: {len(v)} seed(s)' for t, v in runs.items())}"
                             "; compare at least three temperatures with at least three seeds each.")
    expect(len(enough) == len(runs), "every temperature you try needs at least three seeds, or its spread is "
                                     f"unknown: {', '.join(f'T={t:g}' for t in runs if t not in enough)}.")
    expect(isinstance(got, tuple) and len(got) == 2, f"best_temperature: return (temperature, decided), got {got!r}.")
    temperature, decided = got
    best, expected_decided = temperature_verdict(enough)
    expect(isinstance(temperature, (int, float)) and math.isclose(temperature, best),
           f"best_temperature returned {temperature!r}; the lowest mean perplexity in your table is at T={best:g}.")
    expect(isinstance(decided, bool), f"decided must be True or False, got {decided!r}.")
    if decided != expected_decided:
        raise CheckFailed(f"best_temperature says decided={decided}, but by the rule (the best mean lower than "
                          "every other mean by more than the larger of the two spreads, max - min over seeds) your "
                          f"table says {expected_decided}.")
    verdict = "beats every other by more than the seeds' spread" if decided else \
        "does not beat every other by more than the seeds' spread: the seeds decide as much as the temperature"
    passed_experiment(f"best_temperature: T={best:g} has the lowest mean perplexity and {verdict}", probe)


# ---------------------------------------------------------------------------------------------------------------
# Debugging exercise: a soft-target loss that trains, but not as the recipe says


@check(forbids=("course_utils.training.distill.distillation_loss", "course_utils.training.distill.kd_loss_fn",
                "course_utils.training.distill.kl_divergence"))
def soft_loss_debugged(student: Callable[..., torch.Tensor]) -> None:
    """``soft_loss(student_logits, teacher_logits, temperature)``: ``T^2 KL(teacher_T || student_T)``, averaged over
    every token position."""
    g = torch.Generator().manual_seed(11)
    s = (2 * torch.randn(2, 16, 23, generator=g)).requires_grad_()
    t = 3 * torch.randn(2, 16, 23, generator=g)
    for temp in (1.0, 2.0, 4.0):
        what = f"soft_loss on logits of shape (2, 16, 23) at temperature {temp:g}"
        got_tensor = call(student, s, t, temp, what="soft_loss")
        got = _scalar(got_tensor, what)
        expected = distill.distillation_loss(s.detach(), t, None, alpha=1.0, temperature=temp).item()
        rows = _scalar(call(student, s.detach().reshape(4, 8, 23), t.reshape(4, 8, 23), temp, what="soft_loss"),
                       what)
        if not _near(got, rows):
            raise CheckFailed(f"{what}: {got:.6g}, but {rows:.6g} for the same 32 positions given as 4 sequences of "
                              "8 instead of 2 of 16. An average over token positions cannot depend on how they are "
                              "split into rows: look at what your reduction divides by.")
        if not _near(got, expected):
            at_one = _scalar(call(student, s, t, 1.0, what="soft_loss"), what)
            right_at_one = _near(at_one, distill.distillation_loss(s.detach(), t, None, alpha=1.0,
                                                                   temperature=1.0).item())
            if right_at_one:
                raise CheckFailed(f"{what}: expected {expected:.6g}, got {got:.6g}, although your loss is right "
                                  "at T = 1. As T grows it falls behind, as the first column of section 3's "
                                  "gradient table does: a student trained with it at T = 4 barely feels the "
                                  "teacher. Compare with the loss written on the KD formula.")
            raise CheckFailed(f"{what}: expected {expected:.6g}, got {got:.6g}. The soft term is T**2 times "
                              "KL(softmax(teacher / T) || softmax(student / T)), averaged over the token positions.")
        expect(isinstance(got_tensor, torch.Tensor) and got_tensor.requires_grad,
               f"{what}: the value is right, but it came back without a gradient: return the tensor itself.")
    passed("soft_loss: T**2 KL(teacher_T || student_T), averaged over every position, whatever the batch's shape.")
