"""Tables that read well both as markdown in a notebook and as plain text in a terminal or a log."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def format_cell(value: Any) -> str:
    """One value as shown in a table: thousands separators, two decimals, yes/NO for booleans."""
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


class Table(str):
    """A markdown table as text: ``print`` shows it as plain text, a notebook cell that ends with it renders it.

    Rendered, a wide table keeps its columns at any window width; the plain text stays in the stored output too,
    for terminals, nbval and readers without markdown.
    """

    def _repr_markdown_(self) -> str:
        return str(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A markdown table that also reads well as plain text (columns padded, numbers right-aligned)."""
    text_rows = [[format_cell(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in text_rows)) if text_rows else len(str(h))
              for i, h in enumerate(headers)]
    numeric = [all(_is_number(r[i]) for r in text_rows) and bool(text_rows) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|"
    return Table("\n".join([line([str(h) for h in headers]), rule, *(line(r) for r in text_rows)]))


def records_table(records: Sequence[dict[str, Any]]) -> Table:
    """:func:`markdown_table` of a list of dicts with the same keys (the keys are the headers)."""
    if not records:
        return Table("(no rows)")
    headers = list(records[0])
    return markdown_table(headers, [[record.get(h, "") for h in headers] for record in records])


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", "").split(" ")[0])
        return True
    except ValueError:
        return False
