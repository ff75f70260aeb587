"""Checks for Notebook 03 (pretraining a GPT): sliding windows, causal attention, sampling probabilities,
the warm-up + cosine schedule, Chinchilla's compute-optimal size, and the experiment that finds the fastest learning
rate; and :func:`your_piece`, which puts the student's attention, schedule and sampling step into the
model."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from course_utils.checks import (
    CheckFailed,
    call,
    check,
    expect,
    expect_close,
    expect_tensor_close,
    library_calls,
    measured_losses,
    passed,
    passed_experiment,
    pieces,
)
from course_utils.training import scaling
from course_utils.training.sampling import next_token_probs
from course_utils.training.text_data import SlidingWindowDataset
from course_utils.training.train import TrainConfig, lr_at


def _as_list(value: Any, what: str) -> list[int]:
    if isinstance(value, torch.Tensor):
        return [int(x) for x in value.tolist()]
    try:
        return [int(x) for x in value]
    except (TypeError, ValueError):
        raise CheckFailed(f"{what}: expected a list (or tensor) of token ids, got {type(value).__name__}.") from None


# ----------------------------------------------------------------------------------------------- sliding windows
@check(forbids=("course_utils.training.text_data.SlidingWindowDataset",))
def sliding_windows(student: Callable[[list[int], int, int], Any]) -> None:
    """``sliding_windows(token_ids, max_length, stride)`` -> list of ``(inputs, targets)`` pairs."""
    cases = [(list(range(10, 30)), 4, 4), (list(range(100, 111)), 4, 2), (list(range(50, 60)), 3, 1),
             (list(range(7)), 6, 3)]
    for tokens, max_length, stride in cases:
        what = f"sliding_windows(ids {tokens[0]}..{tokens[-1]}, max_length={max_length}, stride={stride})"
        got = call(student, list(tokens), max_length, stride, what="sliding_windows")
        try:
            pairs = [(_as_list(x, what), _as_list(y, what)) for x, y in got]
        except (TypeError, ValueError):
            raise CheckFailed(f"{what}: expected a list of (inputs, targets) pairs, got {got!r:.120}.") from None
        expected_set = SlidingWindowDataset(tokens, max_length, stride)
        expected = [(x.tolist(), y.tolist()) for x, y in (expected_set[i] for i in range(len(expected_set)))]
        if pairs and all(x == y for x, y in pairs):
            raise CheckFailed(f"{what}: the targets equal the inputs. The target at each position is the NEXT "
                              "token: targets = token_ids[start + 1 : start + max_length + 1].")
        for x, y in pairs:
            expect(len(x) == max_length and len(y) == max_length,
                   f"{what}: every window must hold exactly max_length={max_length} tokens; got inputs of "
                   f"{len(x)} and targets of {len(y)}. Drop a window that would run past the end.")
        starts = [tokens.index(x[0]) for x, _ in pairs]
        expected_starts = list(expected_set.starts)
        if starts != expected_starts:
            hint = ("Start a window every `stride` tokens: range(0, len(token_ids) - max_length, stride). The "
                    "last window needs one extra token for its final target.")
            raise CheckFailed(f"{what}: windows start at positions {starts}, expected {expected_starts}. {hint}")
        expect(pairs == expected, f"{what}: expected {expected[:2]}..., got {pairs[:2]}... Inputs are "
               "token_ids[start : start + max_length], targets the same window shifted one to the right.")
    passed("sliding_windows: every target is the token that follows its input, windows every `stride` tokens.")


# --------------------------------------------------------------------------------------------- causal attention
def _attention_inputs(seed: int, batch: int = 2, heads: int = 3, time: int = 5, dim: int = 8):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, heads, time, dim, generator=g) for _ in range(3))


@check(forbids=(
    "course_utils.models.gpt.explicit_attention", "course_utils.models.arch.grouped_query_attention",
    *library_calls("this exercise asks you to write causal attention yourself",
                   "torch.nn.functional.scaled_dot_product_attention", "torch.nn.MultiheadAttention"),
))
def causal_attention(student: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """``causal_attention(q, k, v)`` with shapes (batch, heads, time, head_dim): ``softmax(QK^T/sqrt(d) + mask) V``."""
    for seed, dims in ((0, {}), (1, {"time": 7, "dim": 16}), (2, {"batch": 1, "heads": 1, "time": 4, "dim": 4})):
        q, k, v = _attention_inputs(seed, **dims)
        what = f"causal_attention on q, k, v of shape {tuple(q.shape)}"
        got = call(student, q.clone(), k.clone(), v.clone(), what="causal_attention")
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        if not isinstance(got, torch.Tensor):
            raise CheckFailed(f"{what}: expected a tensor, got {type(got).__name__}.")
        if tuple(got.shape) != tuple(expected.shape):
            raise CheckFailed(f"{what}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}. The output "
                              "has one vector per query position: weights (.., time, time) @ v (.., time, d).")
        scores = q @ k.transpose(-2, -1)
        future = torch.triu(torch.ones(q.size(-2), q.size(-2), dtype=torch.bool), diagonal=1)
        wrong = {
            "no_scale": torch.softmax(scores.masked_fill(future, float("-inf")), -1) @ v,
            "no_mask": torch.softmax(scores / math.sqrt(q.size(-1)), -1) @ v,
            "scale_by_d": torch.softmax((scores / q.size(-1)).masked_fill(future, float("-inf")), -1) @ v,
            "past_masked": torch.softmax((scores / math.sqrt(q.size(-1))).masked_fill(
                torch.tril(torch.ones_like(future), diagonal=-1), float("-inf")), -1) @ v,
        }
        messages = {
            "no_scale": "the scores are not scaled: divide Q K^T by sqrt(head_dim) before the softmax.",
            "no_mask": "no causal mask: position t may only attend to positions <= t. Set the scores above the "
                       "diagonal (torch.triu(..., diagonal=1)) to -inf before the softmax.",
            "scale_by_d": "the scores are divided by head_dim; divide by its square root, math.sqrt(head_dim).",
            "past_masked": "the mask hides the past instead of the future: mask where key position > query "
                           "position (above the diagonal).",
        }
        for name, value in wrong.items():
            if torch.allclose(got.detach().float(), value, atol=1e-5):
                raise CheckFailed(f"{what}: {messages[name]}")
        expect_tensor_close(got, expected, what, atol=1e-5, rtol=1e-4,
                            hint="Compute softmax(Q K^T / sqrt(d), masked above the diagonal) over the last "
                                 "dimension (the keys), then multiply by V.")
    passed("causal_attention matches F.scaled_dot_product_attention(q, k, v, is_causal=True).")


# ------------------------------------------------------------------------------------------ sampling probabilities
@check(forbids=(
    "course_utils.training.sampling.next_token_probs", "course_utils.training.sampling.top_k_filter",
    "course_utils.training.sampling.softmax_with_temperature",
    # transformers' generate() applies these two warpers to the logits: the very step this exercise asks for
    *library_calls("this exercise asks you to write temperature and top-k yourself",
                   "transformers.TemperatureLogitsWarper", "transformers.TopKLogitsWarper"),
))
def sampling_probs(student: Callable[[torch.Tensor, float, int | None], torch.Tensor]) -> None:
    """``sampling_probs(logits, temperature, top_k)`` -> the probabilities multinomial sampling draws from."""
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0, 1.0, -2.0, 0.0])
    for temperature, top_k in ((1.0, None), (0.5, None), (2.0, None), (1.0, 3), (0.7, 2), (1.5, 1)):
        what = f"sampling_probs(logits, temperature={temperature}, top_k={top_k})"
        got = call(student, logits.clone(), temperature, top_k, what="sampling_probs")
        if not isinstance(got, torch.Tensor):
            got = torch.as_tensor(got, dtype=torch.float)
        expected = next_token_probs(logits, temperature, top_k)
        total = float(got.sum())
        if not math.isclose(total, 1.0, abs_tol=1e-4):
            raise CheckFailed(f"{what}: the probabilities sum to {total:.4f}, not 1. Apply top-k to the LOGITS "
                              "(others set to -inf), then take the softmax, so the kept tokens share all the mass.")
        multiplied = next_token_probs(logits * temperature, 1.0, top_k)
        if not torch.allclose(multiplied, expected, atol=1e-5) and torch.allclose(got.float(), multiplied, atol=1e-5):
            raise CheckFailed(f"{what}: the logits were multiplied by the temperature; divide them: "
                              "softmax(logits / temperature).")
        unfiltered = next_token_probs(logits, temperature, None)
        if top_k is not None and torch.allclose(got.float(), unfiltered, atol=1e-5):
            raise CheckFailed(f"{what}: top_k was ignored: only the {top_k} largest logits may keep a "
                              "probability above zero.")
        kept = int((got > 0).sum())
        if top_k is not None and kept != top_k:
            raise CheckFailed(f"{what}: {kept} tokens have a probability above zero, expected exactly {top_k}.")
        expect_tensor_close(got.float(), expected, what, atol=1e-5, rtol=1e-4,
                            hint="Keep the top_k largest logits (torch.topk), set the rest to -inf, divide by the "
                                 "temperature, then softmax.")
    passed("sampling_probs: temperature flattens or sharpens, top-k keeps only the k most likely tokens.")


# ------------------------------------------------------------------------------------------ learning-rate schedule
@check(forbids=("course_utils.training.train.lr_at",))
def cosine_lr(student: Callable[..., float]) -> None:
    """``cosine_lr(step, max_steps, warmup_steps, max_lr, min_lr)``: linear warm-up, then cosine to ``min_lr``."""
    settings = [dict(max_steps=100, warmup_steps=10, max_lr=1.0, min_lr=0.1),
                dict(max_steps=50, warmup_steps=5, max_lr=3e-3, min_lr=3e-4),
                dict(max_steps=20, warmup_steps=0, max_lr=2.0, min_lr=0.0)]
    for s in settings:
        cfg = TrainConfig(max_steps=s["max_steps"], lr=s["max_lr"], min_lr=s["min_lr"], warmup_steps=s["warmup_steps"])
        steps = sorted({0, 1, s["warmup_steps"] - 1, s["warmup_steps"], s["warmup_steps"] + 1,
                        (s["warmup_steps"] + s["max_steps"]) // 2, s["max_steps"] - 1, s["max_steps"],
                        s["max_steps"] + 10} - {-1})
        for step in steps:
            args = ", ".join(f"{k}={v}" for k, v in s.items())
            what = f"cosine_lr(step={step}, {args})"
            got = call(student, step, s["max_steps"], s["warmup_steps"], s["max_lr"], s["min_lr"], what="cosine_lr")
            expected = lr_at(step, cfg)
            try:
                value = float(got)
            except (TypeError, ValueError):
                raise CheckFailed(f"{what}: expected a number, got {got!r}.") from None
            if step < s["warmup_steps"]:
                if math.isclose(value, s["max_lr"] * step / s["warmup_steps"], rel_tol=1e-6, abs_tol=1e-12) \
                        and not math.isclose(value, expected, rel_tol=1e-6):
                    raise CheckFailed(f"{what}: got {value:.6g}. Warm-up here counts the step being taken: "
                                      "max_lr * (step + 1) / warmup_steps, so step 0 already trains.")
                expect_close(value, expected, what, rel=1e-6,
                             hint="During warm-up (step < warmup_steps) the rate rises linearly: "
                                  "max_lr * (step + 1) / warmup_steps.")
                continue
            if step >= s["max_steps"] and not math.isclose(value, s["min_lr"], rel_tol=1e-6, abs_tol=1e-12):
                raise CheckFailed(f"{what}: got {value:.6g}; at and after max_steps the rate stays at min_lr = "
                                  f"{s['min_lr']} (clamp the progress to 1).")
            to_zero = lr_at(step, replace(cfg, min_lr=0.0))
            if not math.isclose(to_zero, expected, rel_tol=1e-6) and math.isclose(value, to_zero, rel_tol=1e-6):
                raise CheckFailed(f"{what}: got {value:.6g}: the cosine decays from max_lr to min_lr = "
                                  f"{s['min_lr']}, not to zero: min_lr + 0.5 * (max_lr - min_lr) * (1 + cos(pi * p)).")
            expect_close(value, expected, what, rel=1e-6, abs_=1e-12,
                         hint="After warm-up, p = (step - warmup_steps) / (max_steps - warmup_steps), clamped to "
                              "[0, 1]; lr = min_lr + 0.5 * (max_lr - min_lr) * (1 + cos(pi * p)).")
    passed("cosine_lr: linear warm-up, cosine decay to min_lr, flat after max_steps (the schedule train() uses).")


# ---------------------------------------------------------------------------------------------------- Chinchilla
@check(forbids=("course_utils.training.scaling.chinchilla_optimal",))
def chinchilla_optimal(student: Callable[[float], tuple[float, float]]) -> None:
    """``chinchilla_optimal(compute)`` -> ``(n_params, n_tokens)`` with D = 20 N and C = 6 N D."""
    for compute in (5.76e23, 1e21, 3.6e15):
        what = f"chinchilla_optimal({compute:.3g})"
        got = call(student, compute, what="chinchilla_optimal")
        try:
            n_params, n_tokens = (float(x) for x in got)
        except (TypeError, ValueError):
            raise CheckFailed(f"{what}: expected a pair (n_params, n_tokens), got {got!r}.") from None
        n_expected, d_expected = scaling.chinchilla_optimal(compute)
        if math.isclose(n_params, d_expected, rel_tol=1e-3) and math.isclose(n_tokens, n_expected, rel_tol=1e-3):
            raise CheckFailed(f"{what}: got (n_params, n_tokens) swapped: return the parameters first.")
        if math.isclose(n_params, math.sqrt(compute / 20), rel_tol=1e-3):
            raise CheckFailed(f"{what}: got N = {n_params:.3g}, sqrt(6) too large: training costs C = 6 N D "
                              "FLOPs, so with D = 20 N, C = 120 N**2.")
        if math.isclose(n_tokens, n_params / 20, rel_tol=1e-3):
            raise CheckFailed(f"{what}: D = N / 20 came back; the rule is 20 TOKENS per parameter: D = 20 N.")
        expect_close(n_params, n_expected, f"{what}: n_params", rel=1e-4,
                     hint="Solve C = 6 * N * (20 * N) for N: N = sqrt(C / 120).")
        expect_close(n_tokens, d_expected, f"{what}: n_tokens", rel=1e-4, hint="D = 20 * N.")
    passed("chinchilla_optimal: 5.76e23 FLOPs -> about 69B parameters on 1.4T tokens (Chinchilla's own size).")


# --------------------------------------------------------------------------------- experiment: the learning rate
@check()
def fastest_lr(student: Callable[..., Any], probe: Any = None) -> None:
    """``find_fastest_lr(loss_after)``: the learning rate with the lowest loss after the steps, bracketed."""
    from course_utils.checks import experiments

    probe = probe or experiments.learning_rate_probe()
    got, losses = measured_losses(student, probe, "find_fastest_lr", "lr",
                                  too_few="tried {n} learning rates; try at least four (for example a few factors of 3 "
                                          "apart) before you decide.")
    best = min(losses, key=losses.__getitem__)
    expect(isinstance(got, (int, float)) and not isinstance(got, bool),
           f"find_fastest_lr: return the learning rate (a number), got {got!r}.")
    expect(any(math.isclose(got, lr, rel_tol=1e-9) for lr in losses),
           f"find_fastest_lr returned {got!r}, a learning rate it did not try; return one from your table.")
    expect(math.isclose(got, best, rel_tol=1e-9), f"find_fastest_lr returned {got:g}, but in your table {best:g} "
                                                  f"has the lower loss ({losses[best]:.3f}).")
    below, above = [lr for lr in losses if lr < best], [lr for lr in losses if lr > best]
    expect(bool(below) and bool(above),
           f"{best:g} is the {'smallest' if not below else 'largest'} learning rate you tried, so a "
           f"{'smaller' if not below else 'larger'} one may be faster still: try one on that side too (the best "
           "must have a worse one on either side).")
    passed_experiment(f"find_fastest_lr: {best:g} trains fastest, with {max(below):g} and {min(above):g} on either side both "
           f"worse", probe)


# ------------------------------------------------------------------------------ the model, from your pieces
# For each piece the model uses: a small call that tells a written function from the stub, and what stands in.
_PIECES: dict[str, tuple[Callable[[], tuple[Any, ...]], str]] = {
    "causal attention": (lambda: _attention_inputs(0, batch=1, heads=1, time=3, dim=4),
                         "the reference (F.scaled_dot_product_attention)"),
    "learning-rate schedule": (lambda: (3, 20, 5, 1e-3, 1e-4), "the reference (train.lr_at)"),
    "sampling step": (lambda: (torch.tensor([1.0, 3.0, 2.0]), 1.0, 2),
                      "the reference (sampling.next_token_probs)"),
}


def your_piece(piece: str, yours: Callable[..., Any] | None) -> Callable[..., Any] | None:
    """Your function for ``piece`` (one of :data:`_PIECES`) if written, else None: the reference stands in."""
    probe, reference = _PIECES[piece]
    return pieces.your_piece(piece, yours, *probe(), reference=reference)


# ---------------------------------------------------------------------------------------------------------------
# Debugging exercise: a validation loss that will not hold still


def _small_loader_and_model(mode_training: bool) -> tuple[Any, torch.nn.Module]:
    """A few windows of made-up tokens, and a small GPT that trains with dropout, in the mode asked for."""
    from course_utils.models.gpt import GPT, GPTConfig
    from course_utils.training.text_data import make_loader

    tokens = torch.randint(0, 48, (360,), generator=torch.Generator().manual_seed(7))
    loader = make_loader(SlidingWindowDataset(tokens, 12, 12), 4, shuffle=False, drop_last=False)
    torch.manual_seed(3)
    model = GPT(GPTConfig(vocab_size=48, context_length=12, n_embd=32, n_layer=2, n_head=2, dropout=0.3))
    return loader, model.train(mode_training)


@check(forbids=("course_utils.training.train.evaluate",))
def validation_loss_debugged(student: Callable[..., Any]) -> None:
    """``validation_loss(model, loader, max_batches)``: the mean loss of the first batches, measured as
    ``train.evaluate`` measures it, and the model handed back in the mode it came in."""
    from course_utils.training.train import evaluate

    for mode_training, max_batches in ((True, 3), (False, 5)):
        loader, model = _small_loader_and_model(mode_training)
        mode = "training" if mode_training else "eval"
        expected = evaluate(model, loader, "cpu", max_batches)  # leaves the model's mode as it was
        inside: list[tuple[bool, bool]] = []  # (model.training, grad enabled) at every forward pass
        hook = model.register_forward_hook(
            lambda module, args, output, seen=inside: seen.append((module.training, torch.is_grad_enabled())))
        try:
            what = f"validation_loss(a small GPT with dropout, in {mode} mode, its loader, max_batches={max_batches})"
            first = call(student, model, loader, max_batches, what="validation_loss")
            after = model.training
            second = call(student, model, loader, max_batches, what="validation_loss")
        finally:
            hook.remove()
        try:
            first, second = float(first), float(second)
        except (TypeError, ValueError):
            raise CheckFailed(f"{what}: expected a number (the mean loss), got {type(first).__name__}.") from None
        if any(training for training, _ in inside):
            raise CheckFailed(
                f"{what}: measured twice on the same batches, your loss came out {first:.4f}, then {second:.4f}; "
                f"the model's loss on them is {expected:.4f}. Something random still runs while you measure: "
                "what does dropout do in a model that is measured, not trained?")
        if any(grad for _, grad in inside):
            raise CheckFailed(
                f"{what}: the value is right, but every forward pass recorded the autograd graph "
                "(torch.is_grad_enabled() was True inside the model). An evaluation never calls backward(), yet "
                "each batch's activations are kept for it: on a large model that is the memory of training.")
        if after != mode_training:
            raise CheckFailed(
                f"{what}: the model was in {mode} mode when your function got it, and in "
                f"{'training' if after else 'eval'} mode when it gave it back. "
                "train.train evaluates in the middle of training: the steps after an evaluation must train in the "
                "mode they trained in before it.")
        expect(len(inside) == 2 * max_batches,
               f"{what}: your function ran the model on {len(inside) // 2} batches per call; measure the first "
               f"max_batches={max_batches}.")
        expect_close(first, expected, what, rel=1e-5,
                     hint="Average the loss of each of the first max_batches batches.")
    passed("validation_loss: measured in eval mode, without the autograd graph, and the model handed back as it "
           "came (train.evaluate does the same).")
