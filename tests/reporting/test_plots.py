"""course_utils.reporting.plots: figures without pyplot's global state."""

from __future__ import annotations

from course_utils.reporting import plots


def test_new_figure_is_not_managed_by_pyplot():
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    before = plt.get_fignums()
    fig = plots.new_figure(figsize=(3, 2))
    ax = fig.subplots()
    ax.plot([0, 1], [1, 0])
    assert isinstance(fig, Figure) and plt.get_fignums() == before
    assert tuple(fig.get_size_inches()) == (3, 2)


def test_seed_spread_figure_draws_each_arm_at_its_mean_with_its_spread():
    import statistics

    arms = {"T=1": [2.0, 2.2, 2.4], "T=2": [1.5, 1.6, 1.7]}
    fig = plots.seed_spread_figure(arms, metric="perplexity", xlabel="temperature")
    ax = fig.axes[0]
    line, _caps, (bars,) = ax.containers[0].lines
    assert list(line.get_ydata()) == [statistics.fmean(v) for v in arms.values()]
    segments = bars.get_segments()
    for segment, values in zip(segments, arms.values(), strict=True):
        low, high = segment[0][1], segment[1][1]
        assert abs((high - low) / 2 - statistics.stdev(values)) < 1e-9
    assert [t.get_text() for t in ax.get_xticklabels()] == ["T=1", "T=2"]
    assert "3 seeds" in ax.get_ylabel()


def test_seed_spread_figure_numeric_axis_and_refuses_a_single_seed():
    import pytest

    fig = plots.seed_spread_figure({4: [1.0, 1.1], 16: [0.9, 0.95], 64: [0.8, 0.9]}, metric="loss",
                                   numeric_x=True)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert list(ax.containers[0].lines[0].get_xdata()) == [4.0, 16.0, 64.0]
    with pytest.raises(ValueError, match="at least two runs"):
        plots.seed_spread_figure({"a": [1.0]}, metric="loss")


def test_seed_spread_figure_draws_on_a_given_panel():
    fig = plots.new_figure(figsize=(6, 2))
    left, right = fig.subplots(1, 2)
    assert plots.seed_spread_figure({"a": [1.0, 2.0], "b": [2.0, 3.0]}, metric="loss", ax=right) is fig
    assert not left.containers and len(right.containers) == 1
