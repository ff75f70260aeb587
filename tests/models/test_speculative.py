"""Assisted generation measured on the shipped tiny models: the same greedy tokens, counted rounds and drafts."""

from __future__ import annotations

import pytest
import torch

from course_utils.ground import sources
from course_utils.models import speculative
from course_utils.training import distill, distill_experiment


@pytest.fixture(scope="module")
def pair():
    teacher, tokenizer = sources.load_causal_lm("tiny-llama", verbose=False)
    student_config = distill_experiment.load_config("tiny-llama-student")
    layers = distill.teacher_layers_for_student(teacher.config.num_hidden_layers, student_config.num_hidden_layers)
    draft = distill_experiment.copied_student(teacher, student_config, layers).eval()
    prompt = tokenizer(["Once upon a time, there was a"], return_tensors="pt")["input_ids"]
    return teacher, draft, prompt


def test_counting_forward_calls_counts_each_model_and_removes_its_hooks(pair):
    teacher, draft, prompt = pair
    with speculative.counting_forward_calls(teacher, draft) as calls, torch.no_grad():
        teacher(prompt)
        teacher(prompt)
        draft(prompt)
    assert calls == [2, 1]
    assert not teacher._forward_hooks and not draft._forward_hooks


def test_the_draft_changes_the_work_not_the_tokens(pair):
    teacher, draft, prompt = pair
    saved_config = teacher.generation_config
    comparison = speculative.compare_with_draft(teacher, draft, prompt, 24, repeats=1)
    alone, assisted = comparison.alone, comparison.assisted
    assert comparison.identical and alone.new_tokens == assisted.new_tokens == 24
    assert (alone.target_calls, alone.draft_calls, alone.accepted) == (24, 0, 0)
    assert alone.tokens_per_target_call == 1.0
    # every round: one target pass that keeps the accepted drafts and adds one token of its own
    assert assisted.target_calls < 24 and assisted.accepted == 24 - assisted.target_calls
    assert 0 < assisted.accepted <= assisted.draft_calls and 0 < assisted.acceptance_rate <= 1
    assert teacher.generation_config is saved_config  # the sampling defaults are back after the measurement
    rows = comparison.rows()
    assert rows[0]["draft forward passes"] == "-" and rows[1]["tokens per target pass"] == (
        f"{24 / assisted.target_calls:.2f}")


def test_expected_speedup_from_the_counts():
    run = speculative.AssistedRun(new_tokens=64, target_calls=16, draft_calls=48, seconds=1.0,
                                  sequences=torch.zeros(1, 70))
    alone = speculative.AssistedRun(64, 64, 0, 2.0, torch.zeros(1, 70))
    comparison = speculative.DraftComparison(alone, run)
    assert comparison.speedup == 2.0
    # 4 tokens per round for 1 target pass + 3 draft passes: free drafts give 4x, drafts at half a pass 1.6x
    assert comparison.expected_speedup(0.0) == 4.0 and comparison.expected_speedup(0.5) == pytest.approx(1.6)
    assert run.acceptance_rate == 1.0
    lines = comparison.summary(0.5).splitlines()
    assert lines[1] == ("The draft proposed 48 tokens and the target kept 48 (100%): "
                        "4.00 new tokens per target pass instead of 1.")
    assert lines[2].startswith("Speed with the draft: 2.00x")
    assert lines[3].endswith("50% of a target pass, these counts would give 1.60x.")


def test_a_batch_is_refused_with_what_to_do(pair):
    teacher, draft, prompt = pair
    with pytest.raises(ValueError, match=r"one sequence at a time.*prompt_ids\[:1\]"):
        speculative.timed_generation(teacher, prompt.repeat(2, 1), 4, draft=draft)
