"""The KV cache, measured: generation with and without it, and its size from the formula against what is allocated.

Without a cache, every new token runs the model over the whole sequence again; with it, the model runs over the
newest token only and reads the keys and values of the earlier ones from memory. Both produce the same tokens
under greedy decoding; :func:`compare_generation` times both and checks that they agree.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from course_utils.models import memory
from course_utils.reporting import plots, tables


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def generate_greedy(model: Any, input_ids: torch.Tensor, new_tokens: int, *, use_cache: bool,
                    stopping_criteria: Any = None) -> Any:
    """Exactly ``new_tokens`` greedy tokens, returning transformers' output object.

    ``eos_token_id=None`` lets generation run past an end-of-text token (which stays an ordinary choice), so every
    run has the same length and matches a plain argmax loop token for token.
    """
    return model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                          max_new_tokens=new_tokens, eos_token_id=None, do_sample=False,
                          use_cache=use_cache, return_dict_in_generate=True, stopping_criteria=stopping_criteria,
                          pad_token_id=model.generation_config.pad_token_id or 0)


# "wall": elapsed time, what a user waits (needed on a GPU, which works asynchronously). "cpu": the CPU time of
# this process, which on a busy shared machine leaves out the time spent waiting for other programs (use it with
# torch.set_num_threads(1): with more threads it adds up the time of all of them).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


class _StepClock:
    """A stopping criterion that never stops: it only notes the time after each generated token."""

    def __init__(self, device: torch.device, clock: Callable[[], float]) -> None:
        self.device, self.clock = device, clock
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        _sync(self.device)
        self.times.append(self.clock())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


@dataclass(frozen=True)
class GenerationRun:
    """One greedy generation: the time each token took (the first includes reading the prompt) and its output."""

    prompt_tokens: int
    step_seconds: tuple[float, ...]
    sequences: torch.Tensor
    past_key_values: Any
    clock: str = "wall"

    @property
    def new_tokens(self) -> int:
        return len(self.step_seconds)

    @property
    def total_seconds(self) -> float:
        return sum(self.step_seconds)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.total_seconds


def timed_generation(model: Any, input_ids: torch.Tensor, new_tokens: int, *, use_cache: bool,
                     repeats: int = 1, clock: str = "wall") -> GenerationRun:
    """Generate ``new_tokens`` greedily, timing every step with ``clock`` (a key of :data:`CLOCKS`); with
    ``repeats``, each step keeps its fastest time."""
    from transformers import StoppingCriteriaList

    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    best: list[float] | None = None
    for _ in range(repeats):
        timer = _StepClock(input_ids.device, CLOCKS[clock])
        _sync(input_ids.device)
        start = timer.clock()
        out = generate_greedy(model, input_ids, new_tokens, use_cache=use_cache,
                              stopping_criteria=StoppingCriteriaList([timer]))
        steps = [b - a for a, b in zip([start, *timer.times], timer.times)]
        best = steps if best is None else [min(a, b) for a, b in zip(best, steps)]
    return GenerationRun(input_ids.shape[1], tuple(best or ()), out.sequences, out.past_key_values, clock)


class SameTokensComparison:
    """One greedy generation done the plain way and a faster way: the same tokens, and how much faster.

    A comparison names its two runs (each with ``sequences`` and ``tokens_per_s``) in :meth:`plain_and_faster`;
    :class:`CacheComparison` and :class:`course_utils.models.speculative.DraftComparison` are two of them.
    """

    def plain_and_faster(self) -> tuple[Any, Any]:
        raise NotImplementedError

    @property
    def identical(self) -> bool:
        """Both runs produced exactly the same tokens (greedy decoding promises it)."""
        plain, faster = self.plain_and_faster()
        return bool(torch.equal(plain.sequences, faster.sequences))

    @property
    def speedup(self) -> float:
        """Tokens per second the faster way over tokens per second the plain way."""
        plain, faster = self.plain_and_faster()
        return faster.tokens_per_s / plain.tokens_per_s


@dataclass(frozen=True)
class CacheComparison(SameTokensComparison):
    """The same greedy generation with and without the KV cache."""

    with_cache: GenerationRun
    without_cache: GenerationRun

    def plain_and_faster(self) -> tuple[GenerationRun, GenerationRun]:
        return self.without_cache, self.with_cache

    def rows(self, checkpoints: Sequence[int] | None = None, window: int = 8) -> list[dict[str, Any]]:
        """Per-token time and tokens/s around each checkpoint (median of the ``window`` steps before it)."""
        n = self.with_cache.new_tokens
        checkpoints = checkpoints or sorted({max(2, n // 8), n // 4, n // 2, 3 * n // 4, n})
        rows = []
        for point in checkpoints:
            lo = max(1, point - window)  # step 0 also reads the prompt: leave it out
            cached = statistics.median(self.with_cache.step_seconds[lo:point])
            plain = statistics.median(self.without_cache.step_seconds[lo:point])
            rows.append({"sequence length": self.with_cache.prompt_tokens + point,
                         "ms/token with cache": f"{cached * 1e3:.2f}", "ms/token without": f"{plain * 1e3:.2f}",
                         "tok/s with cache": f"{1 / cached:,.0f}", "tok/s without": f"{1 / plain:,.0f}",
                         "speed-up": f"{plain / cached:.1f}x"})
        return rows

    def per_token_fit(self, run: GenerationRun) -> tuple[float, float]:
        """A straight line through every step's time against the sequence length: (fixed seconds, seconds per token
        of context). Step 0, which also reads the prompt, is left out."""
        lengths = [run.prompt_tokens + i + 1 for i in range(1, run.new_tokens)]
        slope, intercept = statistics.linear_regression(lengths, run.step_seconds[1:])
        return intercept, slope

    def trend(self, checkpoints: Sequence[int] | None = None) -> str:
        """What the table and the plot show, in three lines written from the measurements."""
        rows = self.rows(checkpoints)
        first, last = rows[0], rows[-1]
        lines = []
        for label, key, run in (("without the cache", "ms/token without", self.without_cache),
                                ("with the cache", "ms/token with cache", self.with_cache)):
            fixed, per_token = self.per_token_fit(run)
            lines.append(f"{label}: {first[key]} ms per token at length {first['sequence length']}, {last[key]} ms at "
                         f"{last['sequence length']}; fitted line: {fixed * 1e3:.2f} ms {'-' if per_token < 0 else '+'} "
                         f"{abs(per_token) * 1e6:.1f} us per token of context")
        speedups = [float(row["speed-up"].rstrip("x")) for row in rows]
        rising = all(b >= a for a, b in zip(speedups, speedups[1:]))
        lines.append(f"speed-up by row: {', '.join(row['speed-up'] for row in rows)}: "
                     + ("it rises at every row" if rising else "it does not rise at every row"))
        return "\n".join(lines)

    def table(self, checkpoints: Sequence[int] | None = None) -> str:
        """:meth:`rows` as a markdown table, with the totals underneath."""
        totals = (f"\n\nWhole generation of {self.with_cache.new_tokens} tokens ({self.with_cache.clock} time): "
                  f"{self.with_cache.total_seconds:.2f} s with the cache, {self.without_cache.total_seconds:.2f} s "
                  f"without ({self.speedup:.1f}x); same tokens: {'yes' if self.identical else 'NO'}.")
        return tables.records_table(self.rows(checkpoints)) + totals

    def plot(self, title: str = "") -> Any:
        """Milliseconds per generated token against the sequence length, with and without the cache; a Figure."""
        fig = plots.new_figure(figsize=(6.8, 3.6), layout="constrained")
        ax = fig.subplots()
        for run, style, label in ((self.without_cache, "-", "without cache: the whole sequence again"),
                                  (self.with_cache, "-", "with KV cache: only the new token")):
            lengths = [run.prompt_tokens + i + 1 for i in range(1, run.new_tokens)]
            ax.plot(lengths, [s * 1e3 for s in run.step_seconds[1:]], style, lw=1, label=label)
        ax.set_xlabel("sequence length (prompt + generated tokens)")
        ax.set_ylabel(f"ms per generated token ({self.with_cache.clock} time)")
        ax.set_ylim(bottom=0)
        ax.set_title(title or "Time per token as the sequence grows", fontsize=10)
        ax.legend(fontsize=8)
        return fig


def compare_generation(model: Any, input_ids: torch.Tensor, new_tokens: int, repeats: int = 1,
                       clock: str = "wall") -> CacheComparison:
    """Generate ``new_tokens`` greedily with and without the KV cache, timing every token with ``clock``."""
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if limit and input_ids.shape[1] + new_tokens > limit:
        raise ValueError(f"prompt ({input_ids.shape[1]} tokens) + {new_tokens} new tokens exceeds the model's "
                         f"{limit} positions: generate fewer tokens.")
    generate_greedy(model, input_ids, 2, use_cache=True)  # warm-up: first-call allocations and lazy imports
    return CacheComparison(
        timed_generation(model, input_ids, new_tokens, use_cache=True, repeats=repeats, clock=clock),
        timed_generation(model, input_ids, new_tokens, use_cache=False, repeats=repeats, clock=clock))


# ---------------------------------------------------------------------------------------------------------------
# How big the cache is


def cache_tensors(past_key_values: Any) -> list[torch.Tensor]:
    """Every key and value tensor in a cache: transformers' ``DynamicCache`` (4.x or 5.x layout), the legacy tuple
    of (key, value) pairs, or :class:`course_utils.models.arch.KVCache`."""
    if hasattr(past_key_values, "layers"):  # transformers >= 4.56
        return [t for layer in past_key_values.layers for t in (layer.keys, layer.values) if t is not None]
    if hasattr(past_key_values, "key_cache"):  # older DynamicCache
        return [*past_key_values.key_cache, *past_key_values.value_cache]
    if hasattr(past_key_values, "keys") and isinstance(past_key_values.keys, list):  # arch.KVCache
        return [*past_key_values.keys, *past_key_values.values]
    return [t for pair in past_key_values for t in pair]


def allocated_bytes(past_key_values: Any) -> int:
    """Bytes of the storage behind the cached tensors (each storage counted once)."""
    storages = {}
    for tensor in cache_tensors(past_key_values):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


@dataclass(frozen=True)
class CacheSize:
    """The formula's inputs, its result, and the bytes the returned cache actually holds."""

    layers: int
    kv_heads: int
    head_dim: int
    tokens: int
    batch: int
    bytes_per_value: int
    formula_bytes: int
    allocated_bytes: int
    shape: tuple[int, ...]

    def as_row(self, label: str) -> dict[str, Any]:
        return {"model": label, "layers": self.layers, "kv heads": self.kv_heads, "head dim": self.head_dim,
                "tokens cached": self.tokens, "bytes/value": self.bytes_per_value,
                "one layer's keys": str(self.shape), "formula (bytes)": f"{self.formula_bytes:,}",
                "allocated (bytes)": f"{self.allocated_bytes:,}",
                "match": "yes" if self.formula_bytes == self.allocated_bytes else "NO"}


def cache_size(past_key_values: Any) -> CacheSize:
    """Read the geometry off the cache itself and compare ``memory.kv_cache_bytes`` with the allocated bytes."""
    tensors = cache_tensors(past_key_values)
    if not tensors:
        raise ValueError("The cache is empty: generate with use_cache=True and return_dict_in_generate=True.")
    batch, kv_heads, tokens, head_dim = tensors[0].shape
    layers = len(tensors) // 2
    element = tensors[0].element_size()
    formula = memory.kv_cache_bytes(layers, kv_heads, head_dim, tokens, batch, element)
    return CacheSize(layers, kv_heads, head_dim, tokens, batch, element, int(formula),
                     allocated_bytes(past_key_values), tuple(tensors[0].shape))
