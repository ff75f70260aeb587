"""LoRA against QLoRA over several seeds: mean and spread of each measurement, and a verdict only beyond the spread.

Each run of the comparison gives one row (:func:`run_row`): the model's bytes, the training peak, the time per step,
the held-out loss and, where it was scored, the exact match on the held-out prompts. :func:`mean_and_spread` summarises the rows of each method over the seeds, and
:func:`claims_verdicts` sets the course documents' claims beside the figures: a difference between the methods counts
only when it is larger than the two spreads added together (the rule of :mod:`course_utils.reporting.repeats`); otherwise the
verdict says that these runs cannot tell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from course_utils.reporting import repeats
from course_utils.reporting.course_documents import EXAM_NOTES, WORKSHOP_GUIDE

# What "about 10% slower" covers, in percent: a reading of the guide's round number, not a test.
ABOUT_TEN_PERCENT = (5.0, 20.0)
MEASURES = ("model MiB", "training peak above start MiB", "s per step", "CPU s per step", "held-out loss",
            "exact match")


def run_row(method: str, seed: int, model_bytes: int, meter: Any, eval_loss: float,
            exact_match: float | None = None) -> dict[str, Any]:
    """One run: its method and seed, what :class:`course_utils.finetuning.trainer_callbacks.TrainingMeter` measured,
    its held-out loss and (when scored) the fraction of held-out prompts answered exactly."""
    peak = meter.peak
    row = {"method": method, "seed": seed, "model MiB": model_bytes / 2**20,
           "training peak above start MiB": peak.increase_bytes / 2**20 if peak else float("nan"),
           "s per step": meter.seconds_per_step, "CPU s per step": meter.cpu_seconds_per_step,
           "held-out loss": eval_loss}
    if exact_match is not None:
        row["exact match"] = exact_match
    return row


def _measures(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The measures every row has (exact match only where every run was scored)."""
    return [measure for measure in MEASURES if all(measure in row for row in rows)]


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
        for measure in _measures(rows):
            values = repeats.spread([row[measure] for row in mine])
            line[measure] = f"{values.mean:.{digits}g} ± {values.std:.2g}"
        table.append(line)
    return table


def _compare(rows: Sequence[dict[str, Any]], measure: str, lora: str, qlora: str) -> tuple[float, float, bool]:
    """QLoRA's mean over LoRA's, the difference of the means, and whether it is beyond the spread."""
    values = by_method(rows, measure)
    judged = repeats.verdict(lora, values[lora], qlora, values[qlora], metric=measure)
    ratio = judged.chal.mean / judged.base.mean if judged.base.mean else math.nan
    return ratio, judged.difference, judged.decided


def claims_verdicts(rows: Sequence[dict[str, Any]], lora: str = "LoRA", qlora: str = "QLoRA", *,
                    steps: int | None = None) -> list[dict[str, str]]:
    """The course documents' claims about QLoRA against LoRA, each beside these runs' figures and a verdict.

    A verdict is about these runs (``steps`` long, when given), so the runs it judges must be these runs: the
    peak and the losses of a short run need not be those of a long one. The accuracy verdict reads the held-out
    loss and, where every run was scored, the exact match (higher is better). A claim with a size ("about 10%
    slower") is met only by a difference of about that size, not by any difference in that direction.
    """
    seeds = len(by_method(rows, "s per step")[lora])
    runs = f"{seeds} seeds" + (f" of {steps} steps" if steps else "")
    model_ratio, _, _ = _compare(rows, "model MiB", lora, qlora)
    peak_ratio, _, peak_differs = _compare(rows, "training peak above start MiB", lora, qlora)
    speed_ratio, speed_difference, speed_differs = _compare(rows, "s per step", lora, qlora)
    _, loss_difference, loss_differs = _compare(rows, "held-out loss", lora, qlora)
    cannot_tell = f"cannot tell: the difference is within the spread of {runs}"

    memory = ("yes for the model" if model_ratio < 0.6 else "no for the model") + "; training peak: " + (
        ("lower" if peak_ratio < 1 else "higher") + f" beyond the spread of {runs}" if peak_differs
        else f"within the spread of {runs}")
    slower_percent = 100 * (speed_ratio - 1)
    if not speed_differs:
        speed = cannot_tell
    elif speed_difference < 0:
        speed = "no: faster beyond the spread"
    elif ABOUT_TEN_PERCENT[0] <= slower_percent <= ABOUT_TEN_PERCENT[1]:
        speed = f"yes: about 10% slower ({slower_percent:.0f}%), beyond the spread"
    else:
        speed = f"slower beyond the spread, but by {slower_percent:.0f}%, not about 10%"
    scored = "exact match" in _measures(rows)
    _, match_difference, match_differs = _compare(rows, "exact match", lora, qlora) if scored else (0.0, 0.0, False)
    gaps = ([f"held-out loss {'higher' if loss_difference > 0 else 'lower'}"] if loss_differs else []) + (
        [f"exact match {'lower' if match_difference < 0 else 'higher'}"] if match_differs else [])
    if gaps:
        accuracy = f"no: QLoRA's {' and '.join(gaps)} beyond the spread of {runs}"
    else:
        accuracy = (f"consistent: no difference in held-out loss{' or exact match' if scored else ''} beyond the "
                    f"spread of {runs}")
    return [
        {"claim (course documents)": f"QLoRA needs far less memory than LoRA (the {EXAM_NOTES}: 'very low' "
                                     "against 'high')",
         "measured here": f"model {model_ratio:.2f}x of LoRA's; training peak {peak_ratio:.2f}x",
         "verdict": memory},
        {"claim (course documents)": f"QLoRA trains more slowly, from dequantization (the {WORKSHOP_GUIDE}: about "
                                     "10% slower)",
         "measured here": f"{speed_ratio:.2f}x LoRA's time per step", "verdict": speed},
        {"claim (course documents)": f"QLoRA's accuracy equals LoRA's (the {EXAM_NOTES}: 'equivalent'; the "
                                     f"{WORKSHOP_GUIDE}: a minimal loss)",
         "measured here": f"held-out loss {loss_difference:+.3f} against LoRA's" + (
             f"; exact match {100 * match_difference:+.0f} points" if scored else ""),
         "verdict": accuracy},
    ]
