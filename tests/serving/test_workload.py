"""course_utils.serving.workload: arrivals, lengths and percentiles."""

import numpy as np
import pytest

from course_utils.serving import workload


def test_poisson_workload_is_seeded_ordered_and_within_ranges():
    a = workload.poisson_workload(200, 10.0, prompt_lengths=(3, 7), output_lengths=(2, 5), vocab=50, seed=1)
    assert a == workload.poisson_workload(200, 10.0, prompt_lengths=(3, 7), output_lengths=(2, 5), vocab=50, seed=1)
    arrivals = [r.arrival_s for r in a]
    assert arrivals == sorted(arrivals) and arrivals[0] == 0.0
    assert 200 / 10.0 * 0.7 < arrivals[-1] < 200 / 10.0 * 1.3  # mean gap 1 / rate
    assert all(3 <= len(r.prompt_ids) <= 7 and 2 <= r.max_new_tokens <= 5 for r in a)
    assert all(4 <= i < 50 for r in a for i in r.prompt_ids)


@pytest.mark.parametrize("q", [0, 25, 50, 95, 99, 100])
def test_percentile_matches_numpy(q):
    values = list(np.random.default_rng(0).exponential(size=37))
    assert workload.percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_summary_reads_timings():
    timings = [workload.Timing(0, 0.0, 1.0, 3.0, 5), workload.Timing(1, 1.0, 1.5, 2.0, 2)]
    s = workload.summary(timings)
    assert s["ttft p50"] == pytest.approx(0.75) and s["tokens/s"] == pytest.approx(7 / 3)
    assert timings[0].tpot == pytest.approx(0.5) and timings[1].latency == pytest.approx(1.0)
