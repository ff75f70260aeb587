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
