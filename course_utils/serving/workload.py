"""Requests, not prompts: a workload with arrival times and lengths, and the latency figures a server is judged by.

A server sees requests arrive at random times (a Poisson process: independent, exponential gaps at ``rate`` per
second) with prompts and answers of different lengths. What it must optimise is measured per request: the time to
first token (TTFT: arrival to first generated token), the time per output token after it (TPOT), and over the
whole run the throughput (generated tokens per second) and the tail of the latency (p50, p95, p99).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    """One request: when it arrives (seconds from the start), its prompt ids and how many tokens it asks for."""

    request_id: int
    arrival_s: float
    prompt_ids: tuple[int, ...]
    max_new_tokens: int


@dataclass
class Timing:
    """What happened to one request: when it arrived, got its first token, and finished, and how many tokens."""

    request_id: int
    arrival_s: float
    first_token_s: float
    finish_s: float
    tokens: int

    @property
    def ttft(self) -> float:
        return self.first_token_s - self.arrival_s

    @property
    def tpot(self) -> float:
        return (self.finish_s - self.first_token_s) / max(self.tokens - 1, 1)

    @property
    def latency(self) -> float:
        return self.finish_s - self.arrival_s


def poisson_workload(n: int, rate_per_s: float, *, prompt_lengths: tuple[int, int], output_lengths: tuple[int, int],
                     vocab: int, seed: int = 0) -> list[Request]:
    """``n`` requests arriving as a Poisson process of ``rate_per_s``, lengths uniform in the given closed ranges."""
    rng = random.Random(seed)
    clock, requests = 0.0, []
    for i in range(n):
        clock += rng.expovariate(rate_per_s) if i else 0.0  # the first request opens the run
        prompt = tuple(rng.randrange(4, vocab) for _ in range(rng.randint(*prompt_lengths)))  # ids < 4: specials
        requests.append(Request(i, clock, prompt, rng.randint(*output_lengths)))
    return requests


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(timings: Sequence[Timing]) -> dict[str, float]:
    """TTFT and latency percentiles, median TPOT (seconds) and throughput (tokens/s) over one run."""
    ttft, latency = [t.ttft for t in timings], [t.latency for t in timings]
    span = max(t.finish_s for t in timings) - min(t.arrival_s for t in timings)
    return {"ttft p50": percentile(ttft, 50), "ttft p95": percentile(ttft, 95), "ttft p99": percentile(ttft, 99),
            "tpot p50": percentile([t.tpot for t in timings], 50), "latency p50": percentile(latency, 50),
            "latency p95": percentile(latency, 95), "latency p99": percentile(latency, 99),
            "tokens/s": sum(t.tokens for t in timings) / span}
