"""Figures for notebooks: matplotlib Figures that show as images in Jupyter, papermill and nbval alike."""

from __future__ import annotations

from typing import Any


def new_figure(**kwargs: Any) -> Any:
    """A matplotlib Figure that is not managed by pyplot (no global state, never shown twice)."""
    from matplotlib.figure import Figure

    enable_figure_display()
    return Figure(**kwargs)


def enable_figure_display() -> None:
    """In IPython, show a Figure that ends a cell as an image even when ``%matplotlib inline`` was never run.

    Jupyter registers that display only when a backend is activated; we add it only if nothing else did.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    formatter = getattr(getattr(shell, "display_formatter", None), "formatters", {}).get("image/png")
    if formatter is None:
        return
    from matplotlib.figure import Figure

    try:
        formatter.lookup_by_type(Figure)
    except KeyError:
        from IPython.core.pylabtools import print_figure

        formatter.for_type(Figure, lambda fig: print_figure(fig, "png", bbox_inches="tight"))


def seed_spread_figure(arms: Any, *, metric: str, xlabel: str = "", title: str = "",
                       numeric_x: bool = False, figsize: tuple[float, float] = (5.0, 3.0), ax: Any = None) -> Any:
    """One point per arm at its mean over seeds, with an error bar of ± the spread (sample std over seeds).

    ``arms`` maps each arm's label (or, with ``numeric_x``, its value on the x axis, e.g. a LoRA rank) to its
    per-seed values. The bars are the bands that :mod:`course_utils.reporting.repeats` compares for a verdict:
    two arms are told apart only where their bars do not overlap, so the plot and the printed verdict agree.
    With ``ax`` it draws on that Axes (one panel of a larger figure) and returns its figure.
    """
    from course_utils.reporting.repeats import spread

    labels = list(arms)
    spreads = [spread(arms[label]) for label in labels]
    if ax is None:
        ax = new_figure(figsize=figsize).subplots()
    fig = ax.figure
    xs = [float(label) for label in labels] if numeric_x else list(range(len(labels)))
    ax.errorbar(xs, [s.mean for s in spreads], yerr=[s.std for s in spreads], fmt="o-" if numeric_x else "o",
                capsize=4)
    if numeric_x:
        ax.set_xscale("log", base=2)
    else:
        ax.set_xlim(-0.5, len(labels) - 0.5)
    ax.set_xticks(xs, [str(label) for label in labels])
    seeds = min(len(s.values) for s in spreads)
    ax.set_ylabel(f"{metric} (mean ± spread, {seeds} seeds)")
    if xlabel:
        ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title)
    return fig
