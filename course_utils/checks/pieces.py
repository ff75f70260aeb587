"""The student's own pieces in the workbook's machinery: what trains is what the student wrote.

Notebook 03 assembles its GPT from the exercises, as a course that builds the model chapter by chapter does: the
model attends with the student's causal attention, trains on the student's learning-rate schedule and samples with
the student's sampling step. :func:`your_piece` decides, for one piece, which function stands in, and prints one
line saying so. A function that still raises ``NotImplementedError`` (the released stub) is not written yet: the
workbook's own code stands in, and the rest of the notebook runs. A written piece stands in as it is, right or
wrong: its check, in the cell above, says what is wrong with it, and the curves show what it does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def your_piece(piece: str, yours: F | None, *probe: Any, reference: str) -> F | None:
    """``yours`` if it is written, else None (the workbook's ``reference`` stands in); prints which, in one line.

    Written means that ``yours(*probe)`` (a small call, made once) raises no ``NotImplementedError``. A piece that
    raises another error cannot run either: the reference stands in, and the line says what it raised.
    """
    if yours is not None:
        try:
            yours(*probe)
        except NotImplementedError:
            pass
        except Exception as exc:  # noqa: BLE001 - the line names the error; the check above shows where it arises
            print(f"{piece}: yours raised {type(exc).__name__} ({exc}), so {reference} stands in until it runs")
            return None
        else:
            print(f"{piece}: yours")
            return yours
    print(f"{piece}: not written yet, {reference} stands in")
    return None
