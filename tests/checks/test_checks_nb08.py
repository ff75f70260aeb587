"""course_utils.checks.nb08: each check passes a right answer and fails, with a useful message, on wrong ones."""

from __future__ import annotations

import math
import random

import pytest
import torch

from course_utils.checks import CheckFailed, nb08
from course_utils.checks.experiments import Probe
from course_utils.evaluation import preferences


def _stub(*args, **kwargs):
    raise NotImplementedError()


# --- continuation_logprob -----------------------------------------------------------------------------------------


def logprob_right(model, tokenizer, context, continuation):
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    n = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    ids = torch.tensor([whole])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids[:, :-1]).logits.float(), -1)[0]
    return logprobs[n - 1:].gather(-1, ids[0, n:, None]).sum().item()


def logprob_mean(model, tokenizer, context, continuation):
    n = len(tokenizer(context + continuation, add_special_tokens=False)["input_ids"]) - len(
        tokenizer(context, add_special_tokens=False)["input_ids"])
    return logprob_right(model, tokenizer, context, continuation) / n


def logprob_logits(model, tokenizer, context, continuation):
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    n = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logits = model(torch.tensor([whole[:-1]])).logits[0]
    return logits[n - 1:].gather(-1, torch.tensor(whole[n:])[:, None]).sum().item()


def test_continuation_logprob_passes(capsys):
    nb08.continuation_logprob(logprob_right)
    assert capsys.readouterr().out.startswith("\u2713 continuation_logprob")


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (logprob_mean, "the mean over"),
    (logprob_logits, "above 0|expected about"),
    (lambda model, tokenizer, context, continuation: [0.0], "expected one number"),
])
def test_continuation_logprob_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb08.continuation_logprob(wrong)


# --- dpo_loss -----------------------------------------------------------------------------------------------------


def dpo_right(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    chosen, rejected = beta * (policy_chosen - ref_chosen), beta * (policy_rejected - ref_rejected)
    return -torch.nn.functional.logsigmoid(chosen - rejected).mean(), chosen, rejected


def test_dpo_loss_passes(capsys):
    nb08.dpo_loss(dpo_right)
    assert "averaged over the pairs" in capsys.readouterr().out


def _swapped(pc, pr, rc, rr, beta):
    loss, chosen, rejected = dpo_right(pc, pr, rc, rr, beta)
    return -torch.nn.functional.logsigmoid(rejected - chosen).mean(), chosen, rejected


def _summed(pc, pr, rc, rr, beta):
    loss, chosen, rejected = dpo_right(pc, pr, rc, rr, beta)
    return -torch.nn.functional.logsigmoid(chosen - rejected).sum(), chosen, rejected


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (_swapped, "rewards the rejected"),
    (_summed, "sum over pairs"),
    (lambda pc, pr, rc, rr, beta: dpo_right(pc, pr, rc, rr, 1.0), "chosen_rewards"),
    (lambda pc, pr, rc, rr, beta: dpo_right(pc, pr, 0 * rc, 0 * rr, beta), "chosen_rewards"),
    (lambda pc, pr, rc, rr, beta: dpo_right(pc, pr, rc, rr, beta)[0], "return three things"),
])
def test_dpo_loss_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb08.dpo_loss(wrong)


def test_dpo_loss_refuses_the_workbooks_own():
    from course_utils.checks import DelegationError

    with pytest.raises(DelegationError, match="preferences.dpo_loss"):
        nb08.dpo_loss(lambda *args: preferences.dpo_loss(*args))


# --- the beta experiment ------------------------------------------------------------------------------------------


def _betas(peak=0.1):
    return Probe("accuracy_after", ("beta",), lambda beta: {"held-out accuracy": 0.9 - abs(math.log10(beta / peak)) / 10},
                 "held-out accuracy", 6)


def choose_beta(accuracy_after):
    accuracy = {beta: accuracy_after(beta) for beta in (0.01, 0.1, 1.0)}
    return max(accuracy, key=accuracy.get)


def test_beta_experiment_passes(capsys):
    nb08.beta_experiment(choose_beta, _betas())
    assert "choose_beta: beta 0.1" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "message"), [
    (lambda accuracy_after: 0.1, "without calling"),
    (lambda accuracy_after: [accuracy_after(b) for b in (0.1, 0.2, 0.3)] and 0.1, "ten times"),
    (lambda accuracy_after: [accuracy_after(b) for b in (0.01, 1.0)] and 0.01, "at least three"),
    (lambda accuracy_after: [accuracy_after(b) for b in (0.01, 0.1, 1.0)] and 0.5, "did not try"),
    (lambda accuracy_after: [accuracy_after(b) for b in (0.01, 0.1, 1.0)] and 1.0, "the best in your table"),
])
def test_beta_experiment_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb08.beta_experiment(wrong, _betas())


@pytest.mark.slow
def test_the_dpo_beta_probe_moves_the_policy():
    from course_utils.checks import experiments

    probe = experiments.dpo_beta_probe(steps=2)
    accuracy = probe(0.1)
    row = probe.measured(beta=0.1)
    assert 0 <= accuracy <= 1 and row["distance"] > 0 and math.isfinite(row["margin"])


# --- the debugging exercise: build_pairs --------------------------------------------------------------------------


def pairs_fixed(rows, vocabulary, seed=0):
    rng = random.Random(seed)
    return [{"prompt": r["prompt"], "chosen": r["completion"],
             "rejected": preferences.corrupt(r["completion"], vocabulary, rng)} for r in rows]


def pairs_buggy(rows, vocabulary, seed=0):
    pairs = []
    for row in rows:
        rng = random.Random(seed)
        wrong = preferences.corrupt(row["completion"], vocabulary, rng)
        pairs.append({"prompt": row["prompt"], "chosen": wrong, "rejected": row["completion"]})
    return pairs


def pairs_rng_in_loop(rows, vocabulary, seed=0):
    return [{"prompt": r["prompt"], "chosen": r["completion"],
             "rejected": preferences.corrupt(r["completion"], vocabulary, random.Random(seed))} for r in rows]


def test_build_pairs_passes_the_fixed_version(capsys):
    nb08.preference_pairs_debugged(pairs_fixed)
    assert capsys.readouterr().out.startswith("\u2713 build_pairs")


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (pairs_buggy, "RIGHT translation"),
    (pairs_rng_in_loop, "same position"),
    (lambda rows, vocabulary, seed=0: pairs_fixed(rows, vocabulary, seed)[:-1], "one per row"),
    (lambda rows, vocabulary, seed=0: [{**p, "rejected": p["chosen"] + " zo"} for p in pairs_fixed(rows, vocabulary)],
     "exactly one word"),
])
def test_build_pairs_fails_on_the_bugs(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb08.preference_pairs_debugged(wrong)
