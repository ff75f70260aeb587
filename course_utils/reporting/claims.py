"""Sentences bound to numbers: each markdown claim names the key figures it reads and the relation they must satisfy.

Prose is written against one run; another run (another CPU, rebuilt data, the colab profile, a GPU) can falsify it
without anyone noticing. So a markdown cell that states a measured direction, ratio or number carries, in its
metadata, one entry per such sentence::

    "claims": [
      {"sentence": "the student is faster than its teacher",
       "holds": "student_speedup > 1"},
      {"sentence": "On the tiny profile the table splits in two.",
       "holds": "layers_without_0_best_perplexity > 10 * layers_with_0_worst_perplexity",
       "profile": "tiny"}
    ]

``sentence`` is a phrase of the cell, verbatim (line breaks count as spaces). ``holds`` is a small expression over
the figures that :func:`course_utils.reporting.key_figures.record` writes: figure names (a name with spaces in
backticks, ```nb03 tokens per parameter```), numbers, ``+ - * /``, ``abs``, ``min``, ``max``, the comparisons
``< <= > >= == !=`` (chained too, ``0.9 < a / b < 1.1``), ``and``, ``or``, ``not``, and ``True``/``False``. Nothing
else parses: no attribute, call or subscript reaches Python. ``profile`` (optional) limits a claim about one
profile's figures to the runs of that profile.

:func:`failed_claims` evaluates every claim of a notebook on one run's figures (after ``make run``, ``make test``,
the colab rehearsal, the GPU check); :func:`claim_problems` checks the metadata itself (the release check). Where
the answer depends on the hardware, no claim states it: a line printed by code gives the verdict and the sentence
says where to read it.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLAIMS_KEY = "claims"
CLAIM_FIELDS = {"sentence", "holds", "profile"}
BACKTICKED = re.compile(r"`([^`]+)`")
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
            ast.Eq: operator.eq, ast.NotEq: operator.ne}
_FUNCTIONS = {"abs": abs, "min": min, "max": max}


class ClaimSyntaxError(ValueError):
    """A ``holds`` expression outside the claim language."""


@dataclass(frozen=True)
class Claim:
    """One sentence of a markdown cell and the relation between figures that makes it true."""

    cell: int
    sentence: str
    holds: str
    profile: str | None = None

    @property
    def figures(self) -> list[str]:
        """The figure names the relation reads, in order of appearance."""
        return figure_names(self.holds)


@dataclass(frozen=True)
class ClaimFailure:
    """A claim the figures of a run contradict, or cannot decide because a figure is missing."""

    notebook: str
    claim: Claim
    values: dict[str, Any] = field(default_factory=dict)
    reason: str = "false"

    def __str__(self) -> str:
        shown = ", ".join(f"{name} = {_show(value)}" for name, value in self.values.items()) or "none"
        return (f"{self.notebook} cell {self.claim.cell}: {self.reason}: {self.claim.holds!r}\n"
                f"  sentence: {self.claim.sentence!r}\n  figures: {shown}")


# ---------------------------------------------------------------------------------------------------------------
# The expression language


def _parse(holds: str) -> tuple[ast.Expression, dict[str, str]]:
    """The expression's syntax tree, with each figure name replaced by a placeholder identifier."""
    names: dict[str, str] = {}

    def placeholder(match: re.Match[str]) -> str:
        key = f"_figure_{len(names)}"
        names[key] = match.group(1).strip()
        return key

    try:
        tree = ast.parse(BACKTICKED.sub(placeholder, holds).strip(), mode="eval")
    except SyntaxError as exc:
        raise ClaimSyntaxError(f"{holds!r} does not parse: {exc.msg}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in names and node.id not in _FUNCTIONS:
            if node.id in ("True", "False"):
                continue
            names[node.id] = node.id
    _check_nodes(tree, holds)
    return tree, names


_ALLOWED = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd, ast.BinOp,
            ast.Compare, ast.Name, ast.Load, ast.Constant, ast.Call, *_BINARY, *_COMPARE)


def _check_nodes(tree: ast.AST, holds: str) -> None:
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise ClaimSyntaxError(f"{holds!r}: {type(node).__name__} is not part of the claim language "
                                   "(figures, numbers, + - * /, abs/min/max, comparisons, and/or/not)")
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, bool)):
            raise ClaimSyntaxError(f"{holds!r}: only numbers and True/False may be written, not {node.value!r}")
        if isinstance(node, ast.Call) and (not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS
                                           or node.keywords or not node.args):
            raise ClaimSyntaxError(f"{holds!r}: the only calls are abs(x), min(x, y, ...) and max(x, y, ...)")


def figure_names(holds: str) -> list[str]:
    """The figure names ``holds`` reads (raises :class:`ClaimSyntaxError` outside the language)."""
    return list(dict.fromkeys(_parse(holds)[1].values()))


def evaluate(holds: str, figures: Mapping[str, Any]) -> bool:
    """Whether ``holds`` is true for ``figures`` (name -> value, or name -> ``{"value": ...}`` as recorded).

    Raises ``KeyError`` naming a figure that ``figures`` lacks.
    """
    tree, names = _parse(holds)
    values = {key: _number(figures, name) for key, name in names.items()}
    return bool(_eval(tree.body, values))


def _number(figures: Mapping[str, Any], name: str) -> Any:
    if name not in figures:
        raise KeyError(name)
    value = figures[name]
    return value.get("value") if isinstance(value, Mapping) else value


def _eval(node: ast.AST, values: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return {"True": True, "False": False}.get(node.id, values.get(node.id))
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, values)
        return not operand if isinstance(node.op, ast.Not) else (-operand if isinstance(node.op, ast.USub)
                                                                  else +operand)
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_eval(node.left, values), _eval(node.right, values))
    if isinstance(node, ast.BoolOp):
        results = (_eval(value, values) for value in node.values)
        return all(results) if isinstance(node.op, ast.And) else any(results)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, values)
        for op, right_node in zip(node.ops, node.comparators):
            right = _eval(right_node, values)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Call):
        return _FUNCTIONS[node.func.id](*(_eval(arg, values) for arg in node.args))  # type: ignore[attr-defined]
    raise ClaimSyntaxError(f"cannot evaluate {type(node).__name__}")  # _check_nodes keeps this unreachable


# ---------------------------------------------------------------------------------------------------------------
# Claims of a notebook


def _cells(notebook: Any) -> list[Any]:
    if isinstance(notebook, (str, Path)):
        return json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    return list(notebook["cells"])


def _source(cell: Any) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _name(notebook: Any) -> str:
    return Path(notebook).name if isinstance(notebook, (str, Path)) else "notebook"


def notebook_claims(notebook: Any) -> list[Claim]:
    """Every claim of a notebook (a path, or a notebook read with nbformat or json), with its cell index."""
    claims = []
    for index, cell in enumerate(_cells(notebook)):
        for entry in cell.get("metadata", {}).get(CLAIMS_KEY, []):
            claims.append(Claim(index, str(entry.get("sentence", "")), str(entry.get("holds", "")),
                                entry.get("profile")))
    return claims


def failed_claims(notebook: Any, figures: Mapping[str, Any], *, profile: str | None = None) -> list[ClaimFailure]:
    """The claims of ``notebook`` that one run's ``figures`` contradict or lack a figure for.

    ``figures`` is what the run recorded (``RunResult.figures``, or the figures file as JSON). A claim marked with
    a ``profile`` is checked only when ``profile`` is that one (or not given). Each failure prints its sentence, the
    figures' values and the cell index.
    """
    name = _name(notebook)
    failures = []
    for claim in notebook_claims(notebook):
        if claim.profile and profile and claim.profile != profile:
            continue
        try:
            wanted = claim.figures
        except ClaimSyntaxError as exc:
            failures.append(ClaimFailure(name, claim, {}, f"unreadable ({exc})"))
            continue
        values = {figure: _number(figures, figure) for figure in wanted if figure in figures}
        missing = [figure for figure in wanted if figure not in figures]
        if missing:
            failures.append(ClaimFailure(name, claim, values, f"figure {', '.join(missing)} was not recorded"))
            continue
        try:
            holds = evaluate(claim.holds, figures)
        except (TypeError, ZeroDivisionError) as exc:
            failures.append(ClaimFailure(name, claim, values, f"cannot be evaluated ({exc})"))
            continue
        if not holds:
            failures.append(ClaimFailure(name, claim, values, "false"))
    return failures


def report(failures: Iterable[ClaimFailure]) -> str:
    """The failures as text, one block each; a line saying all hold when there are none."""
    failures = list(failures)
    if not failures:
        return "every claim holds"
    return f"{len(failures)} claim(s) do not hold:\n" + "\n".join(str(failure) for failure in failures)


# ---------------------------------------------------------------------------------------------------------------
# The authoring check

_RECORD_CALL = re.compile(r"""key_figures\.record\(\s*(?P<q>["'])(?P<name>[^"'\n]+)(?P=q)""")


def recorded_figure_names(notebook: Any) -> set[str]:
    """The figure names the code cells of a notebook record (``key_figures.record("name", ...)``, literal names)."""
    return {match.group("name") for cell in _cells(notebook) if cell.get("cell_type") == "code"
            for match in _RECORD_CALL.finditer(_source(cell))}


def _words(text: str) -> str:
    return " ".join(text.split())


def claim_problems(notebook: Any) -> list[str]:
    """Claims metadata that cannot work: a sentence not in its cell, a figure no cell records, bad syntax."""
    recorded = recorded_figure_names(notebook)
    problems = []
    for index, cell in enumerate(_cells(notebook)):
        entries = cell.get("metadata", {}).get(CLAIMS_KEY)
        if entries is None:
            continue
        where = f"cell {index}"
        if cell.get("cell_type") != "markdown":
            problems.append(f"{where}: claims belong to markdown cells (the sentence a student reads)")
        if not isinstance(entries, list):
            problems.append(f"{where}: metadata 'claims' must be a list of {{sentence, holds}} entries")
            continue
        for entry in entries:
            if not isinstance(entry, Mapping) or not {"sentence", "holds"} <= set(entry) - {""}:
                problems.append(f"{where}: a claim needs a 'sentence' and a 'holds' field; found {entry!r}")
                continue
            if set(entry) - CLAIM_FIELDS:
                problems.append(f"{where}: unknown claim fields {sorted(set(entry) - CLAIM_FIELDS)}")
            sentence = str(entry["sentence"])
            if not sentence.strip() or _words(sentence) not in _words(_source(cell)):
                problems.append(f"{where}: the claim's sentence is not in the cell: {sentence[:80]!r}")
            try:
                names = figure_names(str(entry["holds"]))
            except ClaimSyntaxError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if not names:
                problems.append(f"{where}: {entry['holds']!r} reads no figure; a claim is about measured figures")
            unknown = [name for name in names if name not in recorded]
            if unknown:
                problems.append(f"{where}: the claim reads {', '.join(map(repr, unknown))}, which no cell of this "
                                "notebook records with key_figures.record")
    return problems


def _show(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.6g}"
    return repr(value)
