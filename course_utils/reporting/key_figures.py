"""Record the key figures a notebook measures, so ``make run`` can put them in its summary table."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FIGURES_ENV = "COURSE_FIGURES_FILE"


def record(name: str, value: Any, unit: str = "") -> Any:
    """Remember ``value`` under ``name`` for the run summary (a no-op outside ``make run``); returns ``value``.

    The runner sets ``COURSE_FIGURES_FILE`` for each notebook; figures are appended to that JSON file.
    """
    target = os.environ.get(FIGURES_ENV)
    if target:
        path = Path(target)
        figures = json.loads(path.read_text()) if path.exists() else {}
        figures[name] = {"value": _plain(value), "unit": unit}
        path.write_text(json.dumps(figures, indent=2))
    return value


def _plain(value: Any) -> Any:
    """Turn numpy and torch scalars into plain Python numbers for JSON."""
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (ValueError, RuntimeError):
            pass
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)
