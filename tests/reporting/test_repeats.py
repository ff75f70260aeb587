"""The verdict rule over seeds: a difference counts only when it is larger than the two spreads together."""

from __future__ import annotations

import pytest

from course_utils.reporting import repeats


def test_spread_is_the_sample_standard_deviation():
    s = repeats.spread([2.0, 4.0, 6.0])
    assert (s.mean, s.std) == (4.0, 2.0)
    assert s.format(2) == "4.00 ± 2.00" and repeats.spread([0.5, 0.7]).format(1, 100, "%") == "60.0% ± 14.1%"
    with pytest.raises(ValueError, match="at least two runs"):
        repeats.spread([1.0])
    with pytest.raises(ValueError, match="finite"):
        repeats.spread([1.0, float("nan")])


def test_a_verdict_needs_a_difference_larger_than_both_spreads():
    clear = repeats.verdict("labels", [3.0, 3.1, 2.9], "KD", [2.5, 2.6, 2.4])
    assert clear.decided and clear.challenger_better is True
    assert clear.sentence().startswith("KD BEATS labels (held-out perplexity 2.500 ± 0.100 against 3.000 ± 0.100 "
                                       "over 3 seeds; difference 0.500, spreads together 0.200)")
    worse = repeats.verdict("labels", [3.0, 3.1, 2.9], "T=2", [3.5, 3.6, 3.4])
    assert worse.challenger_better is False and worse.sentence().startswith("T=2 LOSES TO labels")
    # the means differ by 0.15, more than either spread (0.1) but not more than both together (0.2)
    close = repeats.verdict("labels", [3.0, 3.1, 2.9], "KD", [2.85, 2.95, 2.75])
    assert not close.decided and close.challenger_better is None
    assert close.sentence().startswith("NO VERDICT: KD and labels are not told apart")


def test_higher_is_better_turns_the_direction_round():
    more = repeats.verdict("a", [0.70, 0.71, 0.69], "b", [0.80, 0.81, 0.79], metric="agreement",
                           lower_is_better=False)
    assert more.challenger_better is True and "agreement 0.800 ± 0.010" in more.sentence()
