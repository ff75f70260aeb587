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
