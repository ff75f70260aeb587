"""course_utils.finetuning.sft_eval: greedy answers scored, logits with padding zeroed, answer-token probabilities."""

from __future__ import annotations

import pytest
import torch

from course_utils.finetuning import sft_data, sft_eval
from course_utils.ground import sources


@pytest.fixture(scope="module")
def tiny():
    return sources.load_causal_lm("tiny-llama", verbose=False)


def test_evaluation_scores_the_models_own_answers(tiny):
    model, tokenizer = tiny
    rows = [{"prompt": "Once upon a time, there was", "completion": " a girl"},
            {"prompt": "Translate to Zorbish: the cat sleeps.\nZorbish:", "completion": " cup kitchen zo"}]
    result = sft_eval.evaluate_generation(model, tokenizer, rows, chat=False, max_new_tokens=4)
    assert len(result.predictions) == 2 and result.references == [" a girl", " cup kitchen zo"]
    assert set(result.scores) >= {"exact match", "token F1", "BLEU"} and 0 <= result.scores["exact match"] <= 1
    assert result.predictions == sft_eval.generate(model, tokenizer, [r["prompt"] for r in rows], chat=False,
                                                   max_new_tokens=4)


def test_logits_of_left_padded_prompts_match_each_prompt_alone(tiny):
    model, tokenizer = tiny
    prompts = ["Once upon a time", "Once upon a time, there was a little girl"]
    batch = sft_eval.logits_on(model, tokenizer, prompts, chat=False)
    alone = sft_eval.logits_on(model, tokenizer, prompts[:1], chat=False)
    pad = batch.shape[1] - alone.shape[1]
    assert torch.all(batch[0, :pad] == 0)  # padding positions are zeroed
    assert torch.allclose(batch[0, pad:], alone[0], atol=1e-4)


def test_answer_token_probabilities_cover_the_answer_only(tiny):
    model, tokenizer = tiny
    example = sft_data.tokenize_example(tokenizer, "Once upon a time, there was", " a girl", chat=False)
    rows = sft_eval.answer_token_probabilities(model, tokenizer, example)
    answer_tokens = sum(label != sft_data.IGNORE_INDEX for label in example["labels"][1:])
    assert len(rows) == answer_tokens and all(0 <= row["p(token)"] <= 1 for row in rows)
