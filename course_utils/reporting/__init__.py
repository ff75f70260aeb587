"""Reporting: how measured figures are shown and judged (tables, plots, key figures, verdicts over seeds, the course documents, clean stored outputs)."""
