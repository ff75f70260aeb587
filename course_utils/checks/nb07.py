"""Checks for Notebook 07 (serving): a percentile, a paged KV block allocator, the continuous-batching scheduler
step, the debugging exercise of a block that is never freed, and the open experiment on the latency curve's knee."""

from __future__ import annotations

import random
from collections.abc import Callable

from course_utils.checks import (
    CheckFailed,
    call,
    check,
    expect,
    expect_close,
    expect_equal,
    passed,
    passed_experiment,
    run_experiment,
)
from course_utils.serving import batching, paged_kv, workload

LIBRARY_SCHEDULERS = (  # where the exercise is to write a scheduler, the library's is off limits too
    "transformers.generation.continuous_batching.ContinuousBatchingManager",
)


@check(forbids=("course_utils.serving.workload.percentile", "numpy.percentile", "numpy.quantile",
                "statistics.quantiles", "torch.quantile"))
def percentile(student: Callable[[list[float], float], float]) -> None:
    """``percentile(values, q)``: linear interpolation between the sorted values, numpy's default."""
    rng = random.Random(7)
    cases = [([3.0, 1.0, 2.0], 50, "three unsorted values, the median"), ([1.0, 2.0, 3.0, 4.0], 50, "an even count"),
             ([10.0, 20.0], 95, "two values, p95 (between them)"), ([5.0], 99, "a single value"),
             ([rng.expovariate(1.0) for _ in range(101)], 99, "101 latencies, p99"),
             ([rng.random() for _ in range(40)], 0, "p0, the smallest"), ([1.0, 9.0, 4.0], 100, "p100, the largest")]
    for values, q, label in cases:
        what = f"percentile({label})"
        got = call(student, list(values), q, what="percentile")
        expected = workload.percentile(values, q)
        nearest = sorted(values)[min(len(values) - 1, round((len(values) - 1) * q / 100))]
        if got == nearest and got != expected:
            raise CheckFailed(f"{what}: {got:.6g} is the nearest value; interpolate linearly between the two order "
                              f"statistics around position (n - 1) * q / 100 (expected {expected:.6g}).")
        expect_close(got, expected, what, rel=1e-9, abs_=1e-12,
                     hint="Sort first; the position is (n - 1) * q / 100, between index floor and ceil of it.")
    passed("percentile: linear interpolation between order statistics, as numpy.percentile does.")


@check(forbids=("course_utils.serving.paged_kv.append_token",))
def append_token(student: Callable[[list[int], int, list[int], int], int]) -> None:
    """``append_token(block_table, length, free_blocks, block_size)``: a new block only when the last one is full."""
    for block_size, tokens in ((4, 9), (1, 3), (16, 16), (16, 17)):
        table, free = [], list(range(9, -1, -1)) if block_size != 1 else list(range(20, -1, -1))
        expected_table, expected_free = [], list(free)
        length = expected_length = 0
        for step in range(tokens):
            what = f"append_token with block size {block_size}, token {step + 1}"
            length = call(student, table, length, free, block_size, what="append_token")
            expected_length = paged_kv.append_token(expected_table, expected_length, expected_free, block_size)
            expect_equal(length, expected_length, f"{what}: the returned length", "Return length + 1.")
            if len(table) > len(expected_table):
                raise CheckFailed(f"{what}: {len(table)} blocks where {len(expected_table)} hold {length} tokens. "
                                  "Take a block only when length % block_size == 0 (none yet, or the last is full).")
            if len(table) < len(expected_table):
                raise CheckFailed(f"{what}: {len(table)} blocks cannot hold {length} tokens of {block_size} per block.")
            expect_equal(table, expected_table, f"{what}: the block table",
                         "Take the block from the free list with free_blocks.pop(), and append it to the table.")
            expect_equal(free, expected_free, f"{what}: the free list", "The block you take must leave the free list.")
    passed("append_token: one block per block_size tokens, taken from the free list when the last one is full.")


@check(forbids=("course_utils.serving.paged_kv.release",))
def release(student: Callable[[list[int], list[int]], None]) -> None:
    """``release(block_table, free_blocks)``: every block of a finished sequence goes back; none is lost."""
    allocator, tables = paged_kv.BlockAllocator(32), []
    rng = random.Random(3)
    for round_ in range(40):
        if tables and (rng.random() < 0.5 or allocator.used > 24):
            table = tables.pop(rng.randrange(len(tables)))
            held = list(table)
            call(student, table, allocator.free_blocks, what="release")
            back = [b for b in held if b in allocator.free_blocks]
            if len(back) < len(held):
                raise CheckFailed(f"release, round {round_}: a sequence held blocks {held} and only {back} came back "
                                  f"to the free list; {allocator.used} blocks are still in use. A block that is never "
                                  "freed is lost for every later request: the cache fills up and requests wait.")
            expect(not table, f"release, round {round_}: the block table still lists {table} after release.")
            expect(len(set(allocator.free_blocks)) == len(allocator.free_blocks),
                   f"release, round {round_}: a block is on the free list twice.")
        else:
            table, length = [], 0
            for _ in range(rng.randint(1, 20)):
                length = paged_kv.append_token(table, length, allocator.free_blocks, 4)
            tables.append(table)
    for table in tables:
        call(student, table, allocator.free_blocks, what="release")
    expect_equal(allocator.used, 0, "blocks in use after every sequence was released")
    passed("release: after 40 rounds of admitting and finishing sequences, all 32 blocks are free again.")


def _requests(seed: int) -> list[workload.Request]:
    return workload.poisson_workload(12, 8.0, prompt_lengths=(1, 4), output_lengths=(1, 6), vocab=60, seed=seed)


def _next_token(batch: list[list[int]]) -> list[int]:
    return [(sum(ids) * 31 + len(ids)) % 97 for ids in batch]  # deterministic, depends on the whole sequence


@check(forbids=("course_utils.serving.batching.scheduler_step", "course_utils.serving.batching.serve_continuous",
                *LIBRARY_SCHEDULERS))
def scheduler_step(student: Callable[..., list]) -> None:
    """``scheduler_step(waiting, running, now, max_batch, decode)``: admit, step, retire, as batching.scheduler_step."""
    sizes: list[int] = []

    def counting(batch: list[list[int]]) -> list[int]:
        sizes.append(len(batch))
        return _next_token(batch)

    waiting = [workload.Request(0, 0.0, (1, 2), 1), workload.Request(1, 0.0, (3,), 3),
               workload.Request(2, 0.0, (4,), 2), workload.Request(3, 5.0, (5,), 1)]
    running: list = []
    retired = call(student, waiting, running, 0.0, 2, counting, what="scheduler_step")
    expect(isinstance(retired, list), f"scheduler_step should return the list of retired sequences, got {retired!r}.")
    expect(sizes == [2], f"scheduler_step with room for 2 and three arrived requests decoded batches of {sizes}: "
                         "admit while len(running) < max_batch, then call decode once with every running sequence.")
    expect([r.request_id for r in waiting] == [2, 3], "scheduler_step should take admitted requests out of waiting "
                                                     f"(in arrival order); waiting now holds {[r.request_id for r in waiting]}.")
    expect([s.request.request_id for s in retired] == [0],
           f"request 0 asked for 1 token and got it: it should be retired at once, got "
           f"{[s.request.request_id for s in retired]}.")
    expect([s.request.request_id for s in running] == [1], "after retiring, running should hold only the unfinished "
                                                           f"request 1, got {[s.request.request_id for s in running]}.")
    sizes.clear()
    call(student, waiting, running, 1.0, 4, counting, what="scheduler_step")
    expect([r.request_id for r in waiting] == [3], "request 3 arrives at 5.0: at now=1.0 it must stay waiting.")
    expect(sizes == [2], f"at the second step the batch should be requests 1 and 2, decoded together, got {sizes}.")
    for seed in (0, 1):
        for max_batch in (1, 3):
            work = _requests(seed)
            expected = batching.serve_continuous(work, _next_token, max_batch)[1]
            got = batching.serve_continuous(work, _next_token, max_batch,
                                            step=lambda *a: call(student, *a, what="scheduler_step"))[1]
            expect_equal(got, expected, f"the tokens of a workload served with max_batch={max_batch} (seed {seed})",
                         "Each sequence must get exactly max_new_tokens tokens, from decode called on its ids.")
    passed("scheduler_step: admits arrived requests while there is room, steps all at once, retires the finished.")


# ---------------------------------------------------------------------------------------------------------------
# Experiment: where does the latency curve bend?

SLOWDOWN = 2.0  # the knee: past it the p95 latency is more than twice the p95 at the lowest rate tried


def knee_rate(p95: dict[float, float]) -> float | None:
    """The highest rate before the first whose p95 exceeds twice the lowest rate's; None where no rate does."""
    rates = sorted(p95)
    knee = rates[0]
    for rate in rates[1:]:
        if p95[rate] > SLOWDOWN * p95[rates[0]]:
            return knee
        knee = rate
    return None


@check()
def knee_experiment(student: Callable[..., object], probe: object = None) -> None:
    """``find_knee(p95_at)``: rates over a wide range, one past the knee, and the last rate before it returned."""
    from course_utils.checks import experiments

    probe = probe or experiments.latency_probe()
    got = run_experiment(student, probe, "find_knee")
    p95 = dict(zip(probe.values("rate"), probe.values("latency p95")))
    expect(len(p95) >= 4, f"find_knee tried {len(p95)} rates; try at least four, spread over a wide range.")
    span = max(p95) / min(p95)
    expect(span >= 16, f"the rates you tried span a factor of {span:.3g}; spread them over at least a factor of 16 "
                       "(a factor of 4 between neighbours, say), or the curve has no room to bend.")
    lowest = p95[min(p95)]
    expected = knee_rate(p95)
    expect(expected is not None, f"no rate you tried has a p95 above {SLOWDOWN:g} x {lowest:.3g} s (the p95 at the "
                                 "lowest rate): try higher rates until the latency climbs.")
    expect(isinstance(got, (int, float)) and any(abs(got - rate) <= 1e-9 * rate for rate in p95),
           f"find_knee returned {got!r}, a rate it did not try; return one from your table.")
    expect(abs(got - expected) <= 1e-9 * expected,
           f"find_knee returned {got:g}; in your table the last rate before the p95 passes {SLOWDOWN:g} x {lowest:.3g} s "
           f"is {expected:g}.")
    passed_experiment(f"find_knee: up to {expected:g} requests/s the p95 stays within {SLOWDOWN:g} x the p95 at "
                      f"{min(p95):g}/s; past it the requests queue", probe)
