"""Copies of the workbook's reference functions that the delegation traps let through, for building test answers.

A check turns every forbidden reference into a trap while the student's function runs (course_utils.checks.traps),
so a test answer written as ``lambda x, w, eps: arch.rms_norm(x, w, eps) * 2`` would be refused as delegation.
Tests that build right or wrong answers from a reference use ``references(arch).rms_norm`` instead: the function
taken at import time (before any trap), run with the traps disarmed (the reference may call other references).
Only tests do this; the package offers no way around its traps.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any

from course_utils.checks import traps


def _disarmed(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        armed, traps._armed = traps._armed, 0
        try:
            return fn(*args, **kwargs)
        finally:
            traps._armed = armed

    del run.__wrapped__  # the check must see this copy, not the reference it wraps
    return run


def references(module: types.ModuleType) -> types.SimpleNamespace:
    """The module's attributes, every function replaced by a disarmed copy of itself."""
    return types.SimpleNamespace(**{
        name: _disarmed(value) if isinstance(value, types.FunctionType) else value
        for name, value in vars(module).items()
        if not name.startswith("__")
    })
