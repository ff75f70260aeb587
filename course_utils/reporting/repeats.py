"""Repeated runs: a mean and a spread over seeds, and a verdict only where a difference is larger than the spread.

One training run is one draw: another seed (other initial weights, another data order) gives another number. So
a comparison runs each arm from several seeds and reports the mean and the spread, the sample standard deviation
over seeds. The rule for a verdict, used everywhere in the workbook: the means must differ by more than the two
spreads added together, so that the bands mean ± spread of the two arms do not overlap. Otherwise the runs cannot
tell the arms apart, and the verdict says so. With three seeds this is a rule of thumb, not a significance test.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    """The values of one measurement over several seeds."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """Sample standard deviation over the seeds."""
        return statistics.stdev(self.values)

    def format(self, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
        """``mean ± spread`` (values multiplied by ``scale``, e.g. 100 for percentages)."""
        return f"{self.mean * scale:.{digits}f}{unit} ± {self.std * scale:.{digits}f}{unit}"


def spread(values: Sequence[float]) -> Spread:
    """A :class:`Spread` of at least two finite values (one run has no spread)."""
    values = tuple(float(v) for v in values)
    if len(values) < 2:
        raise ValueError(f"A spread needs at least two runs (seeds); got {len(values)}. Run more seeds.")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"Every run must give a finite value to compare; got {values}.")
    return Spread(values)


@dataclass(frozen=True)
class Verdict:
    """Whether ``challenger`` differs from ``baseline`` by more than their spreads, and in which direction."""

    baseline: str
    challenger: str
    metric: str
    base: Spread
    chal: Spread
    lower_is_better: bool = True

    @property
    def difference(self) -> float:
        """Challenger's mean minus baseline's mean."""
        return self.chal.mean - self.base.mean

    @property
    def margin(self) -> float:
        """The two spreads added together: the difference must exceed this for a verdict."""
        return self.base.std + self.chal.std

    @property
    def decided(self) -> bool:
        return abs(self.difference) > self.margin

    @property
    def challenger_better(self) -> bool | None:
        """True or False when decided, None when the runs cannot tell the two apart."""
        if not self.decided:
            return None
        return (self.difference < 0) == self.lower_is_better

    def sentence(self, digits: int = 3) -> str:
        """The verdict in one line, with both means, both spreads and the number of seeds."""
        seeds = min(len(self.base.values), len(self.chal.values))
        figures = (f"{self.metric} {self.chal.format(digits)} against {self.base.format(digits)} over {seeds} seeds; "
                   f"difference {abs(self.difference):.{digits}f}, spreads together {self.margin:.{digits}f}")
        if self.challenger_better is None:
            return (f"NO VERDICT: {self.challenger} and {self.baseline} are not told apart ({figures}): "
                    "the difference is within the spread.")
        word = "BEATS" if self.challenger_better else "LOSES TO"
        return f"{self.challenger} {word} {self.baseline} ({figures}): the difference exceeds the spread."


def verdict(baseline: str, baseline_values: Sequence[float], challenger: str, challenger_values: Sequence[float],
            *, metric: str = "held-out perplexity", lower_is_better: bool = True) -> Verdict:
    """Compare two arms run from several seeds each (see the module's rule)."""
    return Verdict(baseline, challenger, metric, spread(baseline_values), spread(challenger_values), lower_is_better)
