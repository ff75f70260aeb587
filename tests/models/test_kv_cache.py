"""course_utils.models.kv_cache: timed generation with and without the cache, and the cache's bytes against the formula."""

from __future__ import annotations

import pytest
import torch

from course_utils.ground import sources
from course_utils.models import arch, kv_cache, memory


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = sources.load_causal_lm("tiny-llama", verbose=False)
    return model, tokenizer("Once upon a time", return_tensors="pt").input_ids


def test_compare_generation_gives_identical_tokens_and_a_timing_per_token(tiny):
    model, ids = tiny
    comparison = kv_cache.compare_generation(model, ids, 12, clock="cpu")
    assert comparison.identical
    assert comparison.with_cache.new_tokens == comparison.without_cache.new_tokens == 12
    assert comparison.with_cache.sequences.shape == (1, ids.shape[1] + 12)
    assert all(s >= 0 for s in comparison.with_cache.step_seconds)
    assert comparison.speedup > 0 and comparison.with_cache.tokens_per_s > 0
    rows = comparison.rows([4, 12])
    assert [row["sequence length"] for row in rows] == [ids.shape[1] + 4, ids.shape[1] + 12]
    text = comparison.table([4, 12])
    assert "same tokens: yes" in text and "(cpu time)" in text
    assert len(comparison.plot().axes[0].lines) == 2
    assert comparison.without_cache.past_key_values is None or not kv_cache.cache_tensors(
        comparison.without_cache.past_key_values)


def test_generation_is_exactly_the_requested_length_even_past_end_of_text(tiny):
    model, _ = tiny
    # tiny-llama's first greedy token after these ids is end-of-text (id 0); generation must go on anyway.
    out = kv_cache.generate_greedy(model, torch.tensor([[0, 17, 250, 31]]), 6, use_cache=True)
    assert out.sequences.shape == (1, 10)


def test_repeats_keep_the_fastest_time_of_each_step(tiny):
    model, ids = tiny
    run = kv_cache.timed_generation(model, ids, 5, use_cache=True, repeats=2, clock="wall")
    assert run.new_tokens == 5 and run.clock == "wall"


def test_bad_clock_and_too_long_generation(tiny):
    model, ids = tiny
    with pytest.raises(ValueError, match="clock must be one of"):
        kv_cache.timed_generation(model, ids, 2, use_cache=True, clock="sundial")
    with pytest.raises(ValueError, match="exceeds the model's 256 positions"):
        kv_cache.compare_generation(model, ids, 300)


def test_cache_size_formula_equals_allocated_bytes(tiny):
    model, ids = tiny
    out = kv_cache.generate_greedy(model, ids, 7, use_cache=True)
    size = kv_cache.cache_size(out.past_key_values)
    tokens = ids.shape[1] + 7 - 1  # the last generated token has not been fed back
    assert (size.layers, size.kv_heads, size.head_dim, size.tokens, size.bytes_per_value) == (4, 2, 32, tokens, 4)
    assert size.formula_bytes == size.allocated_bytes == memory.kv_cache_bytes(4, 2, 32, tokens, 1, 4)
    assert size.as_row("tiny")["match"] == "yes"


def test_cache_size_of_the_other_cache_layouts():
    k = torch.zeros(2, 3, 5, 8)
    legacy = ((k, k.clone()), (k.clone(), k.clone()))
    assert kv_cache.cache_size(legacy).allocated_bytes == 4 * k.numel() * 4
    ours = arch.KVCache()
    ours.update(0, k, k.clone())
    assert kv_cache.cache_size(ours).formula_bytes == ours.nbytes() == 2 * k.numel() * 4
    shared = ((k, k),)  # the same storage twice is allocated once
    assert kv_cache.allocated_bytes(shared) == k.numel() * 4
    with pytest.raises(ValueError, match="empty"):
        kv_cache.cache_size(arch.KVCache())


def _run(prompt: int, step_ms: list[float]) -> kv_cache.GenerationRun:
    return kv_cache.GenerationRun(prompt, tuple(ms / 1e3 for ms in step_ms), torch.zeros(1, 1), None, "cpu")


def test_trend_is_written_from_the_measured_steps():
    # without the cache each step costs 1 ms + 0.2 ms per token of the sequence it makes; with it a flat 1 ms
    lengths = range(12, 52)  # a 10-token prompt: step 1 makes the 12th token (step 0 also read the prompt)
    plain = _run(10, [50.0] + [1 + 0.2 * n for n in lengths])
    cached = _run(10, [50.0] + [1.0] * len(lengths))
    comparison = kv_cache.CacheComparison(cached, plain)
    fixed, per_token = comparison.per_token_fit(plain)
    assert fixed == pytest.approx(1e-3) and per_token == pytest.approx(2e-4)
    # each row: the median of the 8 steps before it (lengths 13-20 for the row at 20)
    without, with_cache, speedups = comparison.trend([10, 20, 40]).splitlines()
    assert without == ("without the cache: 4.30 ms per token at length 20, 10.30 ms at 50; fitted line: 1.00 ms + "
                       "200.0 us per token of context")
    assert with_cache.startswith("with the cache: 1.00 ms per token at length 20") and "1.00 ms + 0.0 us" in with_cache
    assert speedups == "speed-up by row: 4.3x, 6.3x, 10.3x: it rises at every row"
    bumpy = kv_cache.CacheComparison(cached, _run(10, [50.0] + [1 + 0.2 * n - (5 if n > 40 else 0) for n in lengths]))
    assert bumpy.trend([10, 20, 40]).endswith("it does not rise at every row")
    falling = kv_cache.CacheComparison(_run(10, [50.0] + [2 - 0.01 * n for n in lengths]), plain)
    assert "fitted line: 2.00 ms - 10.0 us per token" in falling.trend([10, 20, 40]).splitlines()[1]
