"""LoRA against QLoRA over several seeds: mean and spread of each measurement, and a verdict only beyond the spread.

Each run of the comparison gives one row (:func:`run_row`): the model's bytes, the training peak, the time per step
and the held-out loss. :func:`mean_and_spread` summarises the rows of each method over the seeds, and
:func:`claims_verdicts` sets the course documents' claims beside the figures: a difference between the methods counts
only when it is larger than the two spreads added together (:func:`beyond_spread`); otherwise the verdict says that
these runs cannot tell.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

MEASURES = ("model MiB", "training peak above start MiB", "s per step", "CPU s per step", "held-out loss")


def run_row(method: str, seed: int, model_bytes: int, meter: Any, eval_loss: float) -> dict[str, Any]:
    """One run: its method and seed, and what :class:`course_utils.trainer_callbacks.TrainingMeter` measured."""
    peak = meter.peak
    return {"method": method, "seed": seed, "model MiB": model_bytes / 2**20,
            "training peak above start MiB": peak.increase_bytes / 2**20 if peak else float("nan"),
            "s per step": meter.seconds_per_step, "CPU s per step": meter.cpu_seconds_per_step,
            "held-out loss": eval_loss}


def mean_and_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = [float(v) for v in values]
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def beyond_spread(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether the means of ``a`` and ``b`` differ by more than their two standard deviations added."""
    (mean_a, spread_a), (mean_b, spread_b) = mean_and_spread(a), mean_and_spread(b)
    return abs(mean_a - mean_b) > spread_a + spread_b


def by_method(rows: Sequence[dict[str, Any]], measure: str) -> dict[str, list[float]]:
    """``{method: [value of each seed]}`` for one measure."""
    out: dict[str, list[float]] = {}
    for row in rows:
        out.setdefault(row["method"], []).append(float(row[measure]))
    return out


def summary_table(rows: Sequence[dict[str, Any]], digits: int = 3) -> list[dict[str, str]]:
    """One row per method: every measure as ``mean ± spread`` over the seeds."""
    methods = list(dict.fromkeys(row["method"] for row in rows))
    table = []
    for method in methods:
        mine = [row for row in rows if row["method"] == method]
        line = {"method": method, "seeds": str(len(mine))}
        for measure in MEASURES:
            mean, spread = mean_and_spread([row[measure] for row in mine])
            line[measure] = f"{mean:.{digits}g} ± {spread:.2g}"
        table.append(line)
    return table


def _compare(rows: Sequence[dict[str, Any]], measure: str, lora: str, qlora: str) -> tuple[float, float, bool]:
    values = by_method(rows, measure)
    ratio = statistics.fmean(values[qlora]) / statistics.fmean(values[lora]) if statistics.fmean(values[lora]) else math.nan
    difference = statistics.fmean(values[qlora]) - statistics.fmean(values[lora])
    return ratio, difference, beyond_spread(values[lora], values[qlora])


def claims_verdicts(rows: Sequence[dict[str, Any]], lora: str = "LoRA", qlora: str = "QLoRA") -> list[dict[str, str]]:
    """The course documents' claims about QLoRA against LoRA, each beside these runs' figures and a verdict."""
    seeds = len(by_method(rows, "s per step")[lora])
    model_ratio, _, _ = _compare(rows, "model MiB", lora, qlora)
    peak_ratio, _, peak_differs = _compare(rows, "training peak above start MiB", lora, qlora)
    speed_ratio, speed_difference, speed_differs = _compare(rows, "s per step", lora, qlora)
    _, loss_difference, loss_differs = _compare(rows, "held-out loss", lora, qlora)
    cannot_tell = f"cannot tell: the difference is within the spread of {seeds} seeds"

    memory = ("yes for the model" if model_ratio < 0.6 else "no for the model") + "; training peak: " + (
        ("lower" if peak_ratio < 1 else "higher") + " beyond the spread" if peak_differs else "within the spread")
    if speed_differs:
        speed = "yes: slower beyond the spread" if speed_difference > 0 else "no: faster beyond the spread"
    else:
        speed = cannot_tell
    if loss_differs:
        accuracy = "no: QLoRA's held-out loss " + ("higher" if loss_difference > 0 else "lower") + " beyond the spread"
    else:
        accuracy = "consistent: no difference beyond the spread"
    return [
        {"claim (course documents)": "QLoRA needs far less memory than LoRA (the exam-question notes: 'very low' "
                                     "against 'high')",
         "measured here": f"model {model_ratio:.2f}x of LoRA's; training peak {peak_ratio:.2f}x",
         "verdict": memory},
        {"claim (course documents)": "QLoRA trains more slowly, from dequantization (the workshop guide: about 10% "
                                     "slower)",
         "measured here": f"{speed_ratio:.2f}x LoRA's time per step", "verdict": speed},
        {"claim (course documents)": "QLoRA's accuracy equals LoRA's (the exam-question notes: 'equivalent'; the "
                                     "workshop guide: a minimal loss)",
         "measured here": f"held-out loss {loss_difference:+.3f} against LoRA's",
         "verdict": accuracy},
    ]
