"""course_utils.reporting.timing: one clock, on torch's Timer, with its warm-ups and this machine's threads."""

from __future__ import annotations

import time

import pytest
import torch

from course_utils.reporting import timing


def test_warms_up_twice_then_times_each_repeat():
    calls = []
    seconds = timing.seconds_per_call(lambda: (calls.append(1), time.sleep(0.01)), repeats=3)
    assert len(calls) == 2 + 3
    assert 0.01 <= seconds < 0.5


def test_keeps_the_threads_torch_uses_now():
    before, seen = torch.get_num_threads(), []
    torch.set_num_threads(2)  # the Timer's own default is 1
    try:
        timing.seconds_per_call(lambda: seen.append(torch.get_num_threads()), repeats=1)
    finally:
        torch.set_num_threads(before)
    assert set(seen) == {2}


def test_the_median_times_each_call_apart():
    delays = iter([0.0, 0.0, 0.05] + [0.0, 0.0, 0.001] * 4)  # two warm-ups, then one timed call, per sample
    seconds = timing.median_seconds(lambda: time.sleep(next(delays)), repeats=5)
    assert seconds < 0.02  # one slow call out of five does not move the median


def test_refuses_no_repeats():
    with pytest.raises(ValueError, match="at least 1"):
        timing.seconds_per_call(lambda: None, repeats=0)
