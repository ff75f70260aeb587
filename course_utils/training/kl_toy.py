"""Forward versus reverse KL on a toy problem: a bimodal teacher, a one-bump student fitted both ways.

The teacher ``p`` is a mixture of two Gaussian bumps on a grid; the student ``q`` is a single Gaussian bump with a
learnable centre and width. Minimising the forward KL(p || q), the usual distillation loss, makes ``q`` cover
both of ``p``'s modes (mass wherever ``p`` has mass); minimising the reverse KL(q || p) makes ``q`` pick one mode
and stay inside it (no mass where ``p`` has little).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from course_utils.training.distill import kl_divergence

Direction = Literal["forward", "reverse"]


def grid(low: float = -6.0, high: float = 6.0, points: int = 481) -> torch.Tensor:
    """Evenly spaced points where the toy distributions live (each point is one 'token')."""
    return torch.linspace(low, high, points)


def bump_logits(x: torch.Tensor, mean: torch.Tensor | float, std: torch.Tensor | float) -> torch.Tensor:
    """Logits of one Gaussian bump on the grid ``x`` (softmax of them is the discretised Gaussian)."""
    std = torch.as_tensor(std, dtype=x.dtype)
    return -0.5 * ((x - mean) / std) ** 2 - torch.log(std)


def bimodal_logits(x: torch.Tensor, means: tuple[float, float] = (-2.0, 2.5), std: float = 0.6,
                   weights: tuple[float, float] = (0.5, 0.5)) -> torch.Tensor:
    """Logits of a mixture of two Gaussian bumps (the teacher), computed in log space so no point is zero."""
    parts = torch.stack([math.log(w) + bump_logits(x, m, std) for m, w in zip(means, weights)])
    return torch.logsumexp(parts, dim=0)


@dataclass
class Fit:
    """A fitted one-bump student."""

    direction: Direction
    mean: float
    std: float
    kl: float  # the KL that was minimised, at the end
    logits: torch.Tensor


def fit_bump(teacher_logits: torch.Tensor, x: torch.Tensor, direction: Direction, *, steps: int = 400,
             lr: float = 0.05, init_mean: float = 1.0, init_std: float = 1.0) -> Fit:
    """Fit a one-bump student to the teacher by minimising KL(p || q) (``forward``) or KL(q || p) (``reverse``)."""
    if direction not in ("forward", "reverse"):
        raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
    mean = torch.tensor(float(init_mean), requires_grad=True)
    log_std = torch.tensor(math.log(init_std), requires_grad=True)
    optimizer = torch.optim.Adam([mean, log_std], lr=lr)
    for _ in range(steps):
        student = bump_logits(x, mean, log_std.exp())
        loss = kl_divergence(teacher_logits, student) if direction == "forward" else kl_divergence(
            student, teacher_logits)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        student = bump_logits(x, mean, log_std.exp())
        final = kl_divergence(teacher_logits, student) if direction == "forward" else kl_divergence(
            student, teacher_logits)
    return Fit(direction, mean.item(), log_std.exp().item(), final.item(), student.detach())


def plot_fits(x: torch.Tensor, teacher_logits: torch.Tensor, fits: list[Fit]):
    """The teacher's distribution and each fitted student's, one panel per direction; returns the Figure."""
    from course_utils.reporting.plots import new_figure

    fig = new_figure(figsize=(10, 3.4), layout="constrained")
    axes = fig.subplots(1, len(fits), sharey=True, squeeze=False)[0]
    p = torch.softmax(teacher_logits, -1)
    titles = {"forward": "forward KL(teacher || student): covers both modes",
              "reverse": "reverse KL(student || teacher): picks one mode"}
    for ax, fit in zip(axes, fits):
        ax.fill_between(x, p, color="#4c72b0", alpha=0.35, label="teacher p (bimodal)")
        ax.plot(x, torch.softmax(fit.logits, -1), color="#c44e52", lw=2,
                label=f"student q: mean {fit.mean:.2f}, std {fit.std:.2f}")
        ax.set_title(titles[fit.direction], fontsize=10)
        ax.set_xlabel("outcome")
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("probability")
    return fig
