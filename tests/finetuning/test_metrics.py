"""course_utils.finetuning.metrics: the scores on known pairs, left padding, and batched greedy generation."""

from __future__ import annotations

import pytest
import torch

from course_utils.finetuning import metrics
from course_utils.ground import sources


def test_exact_match_normalizes_whitespace_only():
    assert metrics.exact_match([" cup  bell zo ", "cup bell zo"], ["cup bell zo", "Cup bell zo"]) == 0.5


def test_token_f1_known_values():
    assert metrics.token_f1("cup park kite zo", "cup park kite cold zo") == pytest.approx(2 * 1 * 0.8 / 1.8)
    assert metrics.token_f1("a a b", "a b b") == pytest.approx(2 / 3)  # counts, not sets
    assert metrics.token_f1("", "") == 1.0 and metrics.token_f1("x", "") == 0.0
    assert metrics.token_f1("x", "y") == 0.0


def test_rouge_and_bleu_from_their_packages():
    perfect = metrics.score(["cup park kite cold zo"], ["cup park kite cold zo"])
    assert perfect["exact match"] == 1.0 and perfect["ROUGE-L"] == pytest.approx(1.0)
    assert perfect["BLEU"] == pytest.approx(1.0)
    partial = metrics.rouge(["cup park kite zo"], ["cup park kite cold zo"])
    assert partial["rouge1"] == pytest.approx(2 * 1 * 0.8 / 1.8)
    assert 0 < metrics.bleu(["the cat sat on a mat"], ["the cat sat on the mat"]) < 1
    assert metrics.bleu(["zzz"], ["cup park"]) == 0.0


def test_lengths_must_pair_up():
    with pytest.raises(ValueError, match="pair up"):
        metrics.exact_match(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="No predictions"):
        metrics.score([], [])


def test_left_pad_and_cut_at_stop():
    ids, mask = metrics.left_pad([[5, 6, 7], [8]], pad_id=1)
    assert ids.tolist() == [[5, 6, 7], [1, 1, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert metrics.cut_at_stop([4, 5, 0, 9], [0]) == [4, 5]


def test_side_by_side_marks_exact_answers():
    rows = metrics.side_by_side(["p1", "p2"], ["a b", "c"], {"model": ["a  b", "d"]})
    assert rows[0]["model"].endswith("\u2713") and not rows[1]["model"].endswith("\u2713")


def test_table_formats_floats():
    assert "0.123" in metrics.table([{"x": 0.123456, "n": 3}])


def test_batched_left_padded_generation_equals_one_at_a_time():
    model, tokenizer = sources.load_causal_lm("tiny-llama", verbose=False)
    prompts = ["Once upon a time", "The dog", "A big red ball was in the"]
    batched = metrics.generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=3)
    single = [metrics.generate(model, tokenizer, [p], max_new_tokens=6)[0] for p in prompts]
    assert batched == single
    # the checkpoint's own sampling settings do not leak into greedy decoding
    model.generation_config.repetition_penalty = 5.0
    assert metrics.generate(model, tokenizer, prompts, max_new_tokens=6) == batched
    assert model.training is False


def test_generate_needs_a_pad_token():
    class NoPad:
        pad_token_id = None

    with pytest.raises(ValueError, match="pad token"):
        metrics.generate(torch.nn.Linear(1, 1), NoPad(), ["x"])
