"""course_utils.reporting.tables: markdown that renders in a notebook and reads as plain text."""

from __future__ import annotations

from course_utils.reporting import tables


def test_numbers_align_right_and_text_left():
    table = tables.records_table([{"name": "a", "bytes": 1234, "ratio": 0.5, "ok": True},
                                  {"name": "longer", "bytes": 5, "ratio": 12.25, "ok": False}])
    header, rule, first, second = table.split("\n")
    assert header.startswith("| name   |") and rule.startswith("|--------|")
    assert "| 1,234 |" in first and "|  0.50 |" in first and "| yes |" in first
    assert "|     5 |" in second and "| NO  |" in second
    assert rule.count(":") == 2  # the two numeric columns are right-aligned in markdown too


def test_a_table_renders_as_markdown_and_prints_as_text():
    table = tables.markdown_table(["a"], [[1]])
    assert isinstance(table, str) and table._repr_markdown_() == str(table)


def test_no_rows():
    assert tables.records_table([]) == "(no rows)"
