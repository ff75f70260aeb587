"""How big, how long: Chinchilla's compute-optimal model size and token count.

Three claims from the literature, written here as code so that they can be computed and plotted:

* training compute is about ``C = 6 N D`` floating-point operations (N parameters, D training tokens: about 2
  FLOPs per parameter per token forward, 4 backward);
* Hoffmann et al. (2022, "Training Compute-Optimal Large Language Models", the Chinchilla paper) fit the loss
  ``L(N, D) = E + A / N**alpha + B / D**beta`` on their runs; minimising it under ``6 N D = C`` gives the
  compute-optimal N and D; their headline rule is about 20 training tokens per parameter;
* Besiroglu et al. (2024, "Chinchilla Scaling: A replication attempt") refit the same law on data read off the
  paper's plots and report different constants, whose optimum agrees better with the paper's other two methods.

The constants are the papers' claims, not something this workbook measured. The loss is in nats per token on
the papers' own web-text corpus: it is not comparable with a loss measured on another corpus or tokenizer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

TOKENS_PER_PARAMETER = 20.0       # Chinchilla's rule of thumb (Hoffmann et al., 2022)
FLOPS_PER_PARAMETER_TOKEN = 6.0   # C = 6 N D


@dataclass(frozen=True)
class LossLaw:
    """``L(N, D) = E + A / N**alpha + B / D**beta`` with one paper's fitted constants."""

    name: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str

    def loss(self, n_params: float, n_tokens: float) -> float:
        """Predicted loss (nats per token on the paper's corpus) of N parameters trained on D tokens."""
        return self.E + self.A / n_params**self.alpha + self.B / n_tokens**self.beta

    def optimal(self, compute: float) -> tuple[float, float]:
        """``(N, D)`` that minimise :meth:`loss` under ``6 N D = compute``."""
        _positive("compute", compute)
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
        a = self.beta / (self.alpha + self.beta)
        n_params = g * (compute / FLOPS_PER_PARAMETER_TOKEN) ** a
        return n_params, compute / (FLOPS_PER_PARAMETER_TOKEN * n_params)


HOFFMANN_2022 = LossLaw("Hoffmann et al. 2022", E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28,
                        source="Training Compute-Optimal Large Language Models (arXiv:2203.15556)")
BESIROGLU_2024 = LossLaw("Besiroglu et al. 2024", E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658,
                         source="Chinchilla Scaling: A replication attempt (arXiv:2404.10102)")
LAWS = (HOFFMANN_2022, BESIROGLU_2024)

# Published models as (name, parameters, training tokens): claims from their papers, for the chart.
REFERENCE_MODELS: tuple[tuple[str, float, float], ...] = (
    ("GPT-3 175B", 175e9, 300e9),
    ("Chinchilla 70B", 70e9, 1.4e12),
    ("Llama-2 7B", 7e9, 2e12),
    ("Llama-3 8B", 8e9, 15e12),
)


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def training_flops(n_params: float, n_tokens: float) -> float:
    """Training compute ``C = 6 N D`` in floating-point operations."""
    _positive("n_params", n_params)
    _positive("n_tokens", n_tokens)
    return FLOPS_PER_PARAMETER_TOKEN * n_params * n_tokens


def chinchilla_optimal(compute: float, tokens_per_parameter: float = TOKENS_PER_PARAMETER) -> tuple[float, float]:
    """``(N, D)`` with ``D = 20 N`` and ``6 N D = compute``: ``N = sqrt(compute / (6 * 20))``."""
    _positive("compute", compute)
    n_params = math.sqrt(compute / (FLOPS_PER_PARAMETER_TOKEN * tokens_per_parameter))
    return n_params, tokens_per_parameter * n_params


def optimal_table(budgets: Sequence[float], laws: Sequence[LossLaw] = LAWS) -> list[dict[str, Any]]:
    """For each compute budget: N and D by the 20-tokens rule and by each fitted law, and tokens per parameter."""
    rows = []
    for compute in budgets:
        row: dict[str, Any] = {"compute (FLOPs)": f"{compute:.2g}"}
        n, d = chinchilla_optimal(compute)
        row["20 tok/param: N"] = _human(n)
        row["D"] = _human(d)
        for law in laws:
            n, d = law.optimal(compute)
            short = law.name.split()[0]
            row[f"{short}: N"] = _human(n)
            row[f"{short}: D"] = _human(d)
            row[f"{short}: D/N"] = round(d / n, 1)
        rows.append(row)
    return rows


def _human(x: float) -> str:
    """1.2e9 -> '1.2B': parameter and token counts as people say them."""
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if x >= size:
            return f"{x / size:.3g}{suffix}"
    return f"{x:.3g}"


def _ratio(x: float) -> str:
    return f"{x:,.0f}" if x >= 10 else f"{x:.2g}"


def where_we_are(n_params: float, n_tokens: float, law: LossLaw = HOFFMANN_2022) -> dict[str, Any]:
    """Our run in Chinchilla's terms: compute spent, tokens per parameter, and the optimum for that compute."""
    compute = training_flops(n_params, n_tokens)
    n_opt, d_opt = law.optimal(compute)
    n_rule, d_rule = chinchilla_optimal(compute)
    return {"parameters": n_params, "tokens": n_tokens, "compute (FLOPs)": compute,
            "tokens per parameter": n_tokens / n_params, "20-rule N": n_rule, "20-rule D": d_rule,
            f"{law.name} N": n_opt, f"{law.name} D": d_opt}


def plot_scaling(ours: tuple[str, float, float] | None = None, *, budgets: Sequence[float] = (),
                 laws: Sequence[LossLaw] = LAWS, models: Sequence[tuple[str, float, float]] = REFERENCE_MODELS):
    """Two panels: compute-optimal N against compute (rule and laws, published models and ours as points),
    and the predicted loss along the compute-optimal frontier of each law."""
    import numpy as np
    from matplotlib.figure import Figure

    from course_utils.reporting.plots import enable_figure_display

    enable_figure_display()
    fig = Figure(figsize=(11, 4))
    left, right = fig.subplots(1, 2)
    points = [(name, n, d) for name, n, d in models] + ([ours] if ours else [])
    low = min([1e15, *(training_flops(n, d) for _, n, d in points)]) / 10
    high = max([1e25, *(training_flops(n, d) for _, n, d in points)]) * 10
    grid = np.logspace(math.log10(low), math.log10(high), 100)
    fitted = np.logspace(18, math.log10(high), 60)   # the fits come from runs of about 1e18 FLOPs and more
    left.plot(grid, [chinchilla_optimal(c)[0] for c in grid], "k--", label="20 tokens per parameter")
    for law in laws:
        left.plot(grid, [law.optimal(c)[0] for c in grid], label=law.name)
        right.plot(fitted, [law.loss(*law.optimal(c)) for c in fitted], label=law.name)
    colors = ["tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
    for i, (name, n, d) in enumerate(points):
        is_ours = bool(ours) and name == ours[0]
        left.scatter([training_flops(n, d)], [n], marker="*" if is_ours else "o", s=160 if is_ours else 40,
                     color="gold" if is_ours else colors[i % len(colors)], edgecolor="k", linewidth=0.5,
                     zorder=3, label=f"{name} ({_ratio(d / n)} tokens/param)")
    for compute in budgets:
        left.axvline(compute, color="grey", alpha=0.3)
    left.set(xscale="log", yscale="log", xlabel="training compute C = 6ND (FLOPs)", ylabel="parameters N",
             title="Compute-optimal model size")
    right.set(xscale="log", xlabel="training compute C (FLOPs)", ylabel="predicted loss (nats, their corpus)",
              title="Loss at the optimum, as each fit predicts")
    left.legend(fontsize=7, loc="upper left")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig
