"""How long a call takes: ``torch.utils.benchmark.Timer``, the one clock behind every time the workbook reports.

The Timer warms the call up before it times it, synchronizes the accelerator before it reads the clock (a CUDA call
returns before its kernels finish), and runs on as many threads as torch uses now: its own default is one thread,
which would time a different machine than the one the notebook runs on.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch
from torch.utils import benchmark


def seconds_per_call(fn: Callable[[], object], repeats: int = 3) -> float:
    """Mean wall seconds of one call of ``fn`` over ``repeats`` timed calls, after two untimed warm-up calls."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}.")
    return _timer(fn).timeit(number=repeats).mean


def median_seconds(fn: Callable[[], object], repeats: int = 20) -> float:
    """Median wall seconds of one call of ``fn`` over ``repeats`` separately timed calls, each after two warm-ups.

    For short calls (a file read), where one slow outlier would move a mean.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}.")
    timer = _timer(fn)
    return statistics.median(timer.timeit(number=1).mean for _ in range(repeats))


def _timer(fn: Callable[[], object]) -> benchmark.Timer:
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
