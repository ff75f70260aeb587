"""Choosing the next token: temperature, top-k, greedy and seeded sampling, and the generation loop."""

from __future__ import annotations

import math

import pytest
import torch

from course_utils.models.gpt import GPT, GPTConfig
from course_utils.training.sampling import (
    generate,
    generate_text,
    multinomial_counts,
    next_token,
    next_token_probs,
    sampling_table,
    softmax_with_temperature,
    temperature_table,
    top_k_filter,
)

LOGITS = torch.tensor([2.0, 1.0, 0.0, -1.0])


def test_temperature_sharpens_and_flattens():
    cold, plain, hot = (softmax_with_temperature(LOGITS, t) for t in (0.5, 1.0, 2.0))
    assert cold[0] > plain[0] > hot[0] and cold[-1] < plain[-1] < hot[-1]
    torch.testing.assert_close(plain, torch.softmax(LOGITS, -1))
    with pytest.raises(ValueError, match="greedy"):
        softmax_with_temperature(LOGITS, 0)


def test_temperature_table_rows_sum_to_one():
    rows = temperature_table([3.0, 1.0, 0.2], [0.5, 1.0, 5.0], labels=["a", "b", "c"])
    assert [r["temperature"] for r in rows] == [0.5, 1.0, 5.0]
    for row in rows:
        assert math.isclose(row["a"] + row["b"] + row["c"], 1.0, abs_tol=1e-3)


def test_top_k_keeps_k_tokens():
    filtered = top_k_filter(LOGITS, 2)
    assert torch.isinf(filtered[2:]).all() and torch.equal(filtered[:2], LOGITS[:2])
    probs = next_token_probs(LOGITS, 1.0, 2)
    assert (probs > 0).sum() == 2 and math.isclose(probs.sum().item(), 1.0, rel_tol=1e-6)
    assert torch.equal(top_k_filter(LOGITS, None), LOGITS) and torch.equal(top_k_filter(LOGITS, 10), LOGITS)
    with pytest.raises(ValueError):
        top_k_filter(LOGITS, 0)


def test_greedy_is_argmax_and_sampling_is_seeded():
    logits = torch.randn(3, 20)
    assert torch.equal(next_token(logits).squeeze(1), logits.argmax(-1))
    draws = [next_token(logits, temperature=1.0, generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(draws[0], draws[1])
    assert torch.equal(next_token(logits, temperature=5.0, top_k=1), logits.argmax(-1, keepdim=True))


def test_multinomial_counts_follow_the_weights():
    counts = multinomial_counts([0.1, 0.6, 0.3], 2000, seed=0)
    assert sum(counts) == 2000 and counts[1] > counts[2] > counts[0]
    assert counts == multinomial_counts([0.1, 0.6, 0.3], 2000, seed=0)


def _tiny_model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=30, context_length=8, n_embd=16, n_layer=1, n_head=2)).eval()


def test_generate_crops_to_the_context_and_stops_at_eos():
    model = _tiny_model()
    out = generate(model, torch.zeros(2, 3, dtype=torch.long), 20, context_length=8)
    assert out.shape == (2, 23)  # longer than the context: the model only ever sees the last 8 tokens
    first = out[0, 3].item()
    stopped = generate(model, torch.zeros(1, 3, dtype=torch.long), 20, context_length=8, eos_id=first)
    assert stopped.shape == (1, 4)


def test_generate_text_and_table_are_reproducible():
    from course_utils.ground.sources import load_tokenizer

    tokenizer = load_tokenizer("tiny-gpt2")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tokenizer), context_length=32, n_embd=16, n_layer=1, n_head=2)).eval()
    a = generate_text(model, tokenizer, "Once upon", 8, temperature=1.0, seed=3)
    assert a.startswith("Once upon") and a == generate_text(model, tokenizer, "Once upon", 8, temperature=1.0, seed=3)
    rows = sampling_table(model, tokenizer, "Once", max_new_tokens=4, seeds=(0, 1))
    assert len(rows) == 12 and {r["setting"] for r in rows} >= {"greedy", "T=1.0, top-k 5"}
    greedy = [r["continuation"] for r in rows if r["setting"] == "greedy"]
    assert greedy[0] == greedy[1]  # the seed does not matter to greedy decoding


def test_a_given_probs_fn_chooses_every_sampled_token_row_by_row():
    model = _tiny_model()
    rows = []

    def always_seven(logits, temperature, top_k):  # one row of logits, as the exercise's function takes it
        rows.append(tuple(logits.shape))
        probs = torch.zeros_like(logits)
        probs[7] = 1.0
        return probs

    start = torch.zeros(2, 3, dtype=torch.long)
    out = generate(model, start, 5, context_length=8, temperature=1.0, probs_fn=always_seven)
    assert out[:, 3:].eq(7).all() and len(rows) == 2 * 5 and rows[0] == (model.cfg.vocab_size,)
    greedy = generate(model, start, 5, context_length=8, probs_fn=always_seven)  # greedy draws no probabilities
    assert torch.equal(greedy, generate(model, start, 5, context_length=8)) and len(rows) == 10

    def same_as_reference(logits, temperature, top_k):
        return next_token_probs(logits, temperature, top_k)

    seeded = {name: generate(model, start, 6, context_length=8, temperature=1.5, top_k=5, probs_fn=fn,
                             generator=torch.Generator().manual_seed(1))
              for name, fn in (("reference", None), ("given", same_as_reference))}
    assert torch.equal(seeded["reference"], seeded["given"])
