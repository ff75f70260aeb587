import pytest

from course_utils.evaluation import judges
from course_utils.ground import sources


def test_the_judge_prompt_shows_both_answers_in_order():
    prompt = judges.judge_prompt("2 + 2?", " 4", " 5")
    assert prompt.index("Answer A: 4") < prompt.index("Answer B: 5") and prompt.endswith("is")


def test_the_summary_counts_agreement_consistency_and_the_first_slot():
    rows = [{"right when first": True, "right when second": True, "consistent": True},
            {"right when first": True, "right when second": False, "consistent": False}]
    summary = judges.judge_summary(rows)
    assert summary["agrees with exact match"] == 0.75 and summary["same verdict both orders"] == 0.5
    assert summary["picks slot A"] == 0.75


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = sources.load_causal_lm("tiny-llama", verbose=False)
    return model.eval(), tokenizer


def test_swapped_verdicts_are_consistent_exactly_when_the_verdict_follows_the_answer(tiny):
    model, tokenizer = tiny
    row = judges.swapped_verdicts(model, tokenizer, "Translate: a cat.", " bell kitchen zo", " bell pond zo")
    assert row["consistent"] == (row["right when first"] == row["right when second"])
    assert judges.verdict(model, tokenizer, "Which? The answer is") in (0, 1)
