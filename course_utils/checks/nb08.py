"""Checks for Notebook 08 (evaluation and preference tuning): the log-likelihood of an answer as a harness scores
it, the DPO loss, the experiment that chooses DPO's beta, and the debugging exercise of the preference pairs."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from course_utils.checks import (
    CheckFailed,
    call,
    check,
    expect,
    expect_close,
    expect_tensor_close,
    passed,
    passed_experiment,
    run_experiment,
)
from course_utils.evaluation import preferences, scoring


@functools.cache
def _tiny_llama() -> tuple[Any, Any]:
    from course_utils.ground import sources

    model, tokenizer = sources.load_causal_lm("tiny-llama", verbose=False)
    return model.eval(), tokenizer


# ------------------------------------------------------------------------------------------ continuation_logprob
@check(forbids=("course_utils.evaluation.scoring.continuation_logprob",))
def continuation_logprob(student: Callable[..., float]) -> None:
    """``continuation_logprob(model, tokenizer, context, continuation)``: summed log p of the continuation."""
    model, tokenizer = _tiny_llama()
    cases = [("Translate to Zorbish: the sad fish jumps.\nZorbish:", " cup park kite cold zo"),
             ("Translate to Zorbish: the sad fish jumps.\nZorbish:", " bell"),
             ("Once upon a time, there was a little", " girl named Lily."),
             ("Lily had a red", "dish")]  # the two texts meet inside one word
    for context, continuation in cases:
        what = f"continuation_logprob(model, tokenizer, {context!r}, {continuation!r})"
        got = call(student, model, tokenizer, context, continuation, what="continuation_logprob")
        if isinstance(got, torch.Tensor):
            got = got.item() if got.numel() == 1 else got
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            raise CheckFailed(f"{what}: expected one number (the sum over the continuation's tokens), got "
                              f"{type(got).__name__}.")
        expected = scoring.continuation_logprob(model, tokenizer, context, continuation)
        expect(got <= 0, f"{what}: got {got:.4g}, above 0; a log-probability is at most 0. Take log_softmax of the "
                         "logits, not the logits themselves.")
        n_tokens = len(tokenizer(context + continuation, add_special_tokens=False)["input_ids"]) - len(
            tokenizer(context, add_special_tokens=False)["input_ids"])
        if n_tokens > 1 and math.isclose(got, expected / n_tokens, rel_tol=1e-4):
            raise CheckFailed(f"{what}: got {got:.4f}, the mean over the {n_tokens} tokens; a harness sums them "
                              "(normalising is a separate choice, made when comparing the choices).")
        expect_close(got, expected, what, rel=1e-4, abs_=1e-4,
                     hint="Encode context + continuation together, take the tokens after the context's own "
                          "tokens, and sum log p(token | the tokens before it): the logits at position t predict "
                          "token t + 1.")
    passed("continuation_logprob: the summed log-probability of an answer, as lm-eval's loglikelihood computes it.")


# ---------------------------------------------------------------------------------------------------- dpo_loss
def _dpo_case(seed: int, n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ref = -20 - 10 * torch.rand(2, n, generator=g)
    return {"policy_chosen": ref[0] + torch.randn(n, generator=g), "policy_rejected": ref[1] + torch.randn(n, generator=g),
            "ref_chosen": ref[0], "ref_rejected": ref[1]}


@check(forbids=("course_utils.evaluation.preferences.dpo_loss", "trl.DPOTrainer"))
def dpo_loss(student: Callable[..., Any]) -> None:
    """``dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)``: (loss, chosen and rejected
    rewards)."""
    for seed, n, beta in ((0, 5, 0.1), (1, 8, 0.5), (2, 3, 2.0)):
        t = _dpo_case(seed, n)
        what = f"dpo_loss on {n} pairs with beta={beta}"
        got = call(student, *t.values(), beta, what="dpo_loss")
        if not (isinstance(got, tuple) and len(got) == 3):
            raise CheckFailed(f"{what}: return three things, (loss, chosen_rewards, rejected_rewards); got "
                              f"{type(got).__name__}.")
        loss, chosen_rewards, rejected_rewards = got
        expected, exp_chosen, exp_rejected = preferences.dpo_loss(*t.values(), beta)
        expect_tensor_close(chosen_rewards, exp_chosen, f"{what}: chosen_rewards",
                            hint="The implicit reward is beta * (log pi(y|x) - log pi_ref(y|x)), per pair.")
        expect_tensor_close(rejected_rewards, exp_rejected, f"{what}: rejected_rewards")
        loss = torch.as_tensor(loss)
        expect(loss.numel() == 1, f"{what}: the loss is one number (the mean over pairs), got shape "
                                  f"{tuple(loss.shape)}.")
        margins = exp_chosen - exp_rejected
        if math.isclose(loss.item(), (-torch.nn.functional.logsigmoid(-margins)).mean().item(), rel_tol=1e-5):
            raise CheckFailed(f"{what}: your loss rewards the rejected answer: it is -log sigmoid(rejected - chosen)."
                              " DPO pushes the chosen reward above the rejected one.")
        if math.isclose(loss.item(), (-torch.nn.functional.logsigmoid(margins)).sum().item(), rel_tol=1e-5):
            raise CheckFailed(f"{what}: your loss is the sum over pairs; TRL and the paper take the mean.")
        expect_close(loss.item(), expected.item(), f"{what}: loss", rel=1e-5,
                     hint="loss = mean over pairs of -log sigmoid(chosen_reward - rejected_reward).")
    passed("dpo_loss: -log sigmoid(beta (chosen log-ratio - rejected log-ratio)), averaged over the pairs.")


# ------------------------------------------------------------------------------------------- the beta experiment
@check()
def beta_experiment(student: Callable[..., object], probe: Any = None) -> None:
    """``choose_beta(accuracy_after)``: the beta whose DPO run prefers the right held-out answers most often."""
    from course_utils.checks import experiments

    probe = probe or experiments.dpo_beta_probe()
    got = run_experiment(student, probe, "choose_beta")
    accuracy = dict(zip(probe.values("beta"), probe.values(probe.result)))
    expect(len(accuracy) >= 3, f"choose_beta tried {len(accuracy)} betas; try at least three.")
    expect(max(accuracy) >= 10 * min(accuracy), f"choose_beta tried betas {sorted(accuracy)}: let the largest be at "
                                                "least ten times the smallest, so that the table shows a trend.")
    expect(got in accuracy, f"choose_beta returned {got!r}, a beta it did not try; return one from your table.")
    best = max(accuracy.values())
    expect(accuracy[got] == best, f"choose_beta returned {got}, whose held-out accuracy is {accuracy[got]:.3f}; "
                                  f"the best in your table is {best:.3f}.")
    passed_experiment(f"choose_beta: beta {got} gave the highest held-out preference accuracy of the betas tried "
                      "(one seed each: a larger difference than the seeds' spread would be needed for a verdict)",
                      probe)


# ---------------------------------------------------------------------------------- debugging: preference pairs
@check(forbids=("course_utils.evaluation.preferences.preference_pairs",))
def preference_pairs_debugged(student: Callable[..., Sequence[dict[str, str]]]) -> None:
    """``build_pairs(rows, vocabulary, seed)``: the right translation chosen, a one-word mistranslation rejected."""
    from course_utils.ground import sources

    rows = list(sources.load_text_dataset("zorbish")["train"].select(range(40)))
    vocabulary = sorted({word for row in rows for word in row["completion"].split()})
    pairs = list(call(student, rows, vocabulary, 0, what="build_pairs"))
    expect(len(pairs) == len(rows), f"build_pairs returned {len(pairs)} pairs for {len(rows)} rows: one per row.")
    for row, pair in zip(rows, pairs):
        expect(set(pair) >= {"prompt", "chosen", "rejected"}, f"a pair has the keys {sorted(pair)}; DPOTrainer reads "
                                                              "prompt, chosen and rejected.")
        expect(pair["prompt"] == row["prompt"], f"a pair's prompt is {pair['prompt']!r}, not the row's prompt "
                                                f"{row['prompt']!r}.")
        if pair["rejected"] == row["completion"]:
            raise CheckFailed(f"for {row['prompt']!r} the RIGHT translation {row['completion']!r} is the rejected "
                              "answer: DPO trained on these pairs learns to prefer mistakes.")
        expect(pair["chosen"] == row["completion"], f"for {row['prompt']!r} the chosen answer is {pair['chosen']!r};"
                                                    f" it should be the right translation {row['completion']!r}.")
        differ = sum(a != b for a, b in zip(pair["chosen"].split(), pair["rejected"].split()))
        expect(differ == 1 and len(pair["chosen"].split()) == len(pair["rejected"].split()),
               f"{pair['chosen']!r} and {pair['rejected']!r} should differ in exactly one word.")
    changed = {next(i for i, (a, b) in enumerate(zip(p["chosen"].split(), p["rejected"].split())) if a != b)
               for p in pairs}
    expect(len(changed) > 1, f"every rejected answer changes the word at the same position ({changed}): the "
                             "random generator restarts for each row. Create it once, before the loop.")
    passed("build_pairs: the right answer chosen, one word changed at varied positions rejected.")
