"""The error every exercise check raises; its own module, so that the traps and the helpers both import it."""

from __future__ import annotations


class CheckFailed(AssertionError):
    """An exercise check failed; the message tells the student what to fix."""
