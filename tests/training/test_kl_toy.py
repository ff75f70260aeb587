"""The forward/reverse KL toy: forward covers both modes, reverse picks one."""

from __future__ import annotations

import pytest
import torch

from course_utils.training import kl_toy


@pytest.fixture(scope="module")
def fits():
    x = kl_toy.grid()
    teacher = kl_toy.bimodal_logits(x)
    return x, teacher, {d: kl_toy.fit_bump(teacher, x, d) for d in ("forward", "reverse")}


def test_teacher_is_a_normalisable_bimodal_distribution(fits):
    x, teacher, _ = fits
    p = torch.softmax(teacher, -1)
    assert torch.isfinite(teacher).all() and p.min() > 0
    peaks = [i for i in range(1, len(x) - 1) if p[i] > p[i - 1] and p[i] > p[i + 1]]
    assert [round(x[i].item(), 1) for i in peaks] == [-2.0, 2.5]


def test_forward_covers_and_reverse_seeks(fits):
    _, _, by_direction = fits
    forward, reverse = by_direction["forward"], by_direction["reverse"]
    assert -0.5 < forward.mean < 1.0 and forward.std > 2.0  # between the modes, wide enough to reach both
    assert reverse.mean == pytest.approx(2.5, abs=0.05) and reverse.std == pytest.approx(0.6, abs=0.05)
    assert reverse.kl == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=0.01)  # one of two equal modes


def test_bad_direction_and_plot(fits):
    x, teacher, by_direction = fits
    with pytest.raises(ValueError, match="forward"):
        kl_toy.fit_bump(teacher, x, "sideways")
    fig = kl_toy.plot_fits(x, teacher, list(by_direction.values()))
    assert len(fig.axes) == 2
