import math

import pytest
import torch

from course_utils.evaluation import preferences, scoring


def test_pick_choice_length_normalisation_changes_the_pick():
    assert scoring.pick_choice([-4.0, -6.0], ["ab", "abcdef"]) == 0
    assert scoring.pick_choice([-4.0, -6.0], ["ab", "abcdef"], norm="chars") == 1
    with pytest.raises(ValueError):
        scoring.pick_choice([0.0], ["a"], norm="tokens")


def test_bootstrap_stderr_matches_the_formula_for_a_proportion():
    values = [1.0] * 30 + [0.0] * 70
    expected = math.sqrt(0.3 * 0.7 / 100)
    assert scoring.bootstrap_stderr(values, resamples=4000) == pytest.approx(expected, rel=0.1)


def test_paired_difference():
    mean, se = scoring.paired_difference([1, 1, 0, 1], [0, 1, 0, 0])
    assert mean == pytest.approx(0.5)
    assert se == pytest.approx(math.sqrt(1 / 3) / 2)


def test_dpo_loss_is_log2_at_the_reference_and_falls_when_chosen_rises():
    zeros = torch.zeros(3)
    loss, chosen, rejected = preferences.dpo_loss(zeros, zeros, zeros, zeros, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2))
    better, _, _ = preferences.dpo_loss(torch.ones(3), zeros, zeros, zeros, beta=0.1)
    assert better.item() < math.log(2)
    assert torch.equal(chosen, zeros) and torch.equal(rejected, zeros)


def test_choice_logprobs_in_one_batch_equal_continuation_logprob_one_by_one():
    from course_utils.ground import sources

    model, tokenizer = sources.load_causal_lm("tiny-llama", verbose=False)
    context, choices = "Translate to Zorbish: a cat.\nZorbish:", [" bell kitchen zo", " cup", " bell kitchen calm sock zo"]
    batched = scoring.choice_logprobs(model.eval(), tokenizer, context, choices)
    one_by_one = [scoring.continuation_logprob(model, tokenizer, context, choice) for choice in choices]
    assert batched == pytest.approx(one_by_one, abs=1e-4)
