"""course_utils.reporting.key_figures: figures go to the run's file as plain JSON numbers, and nowhere outside a run."""

from __future__ import annotations

import json

import numpy as np
import torch

from course_utils.reporting import key_figures


def test_figures_are_written_as_plain_numbers_with_their_unit(monkeypatch, tmp_path):
    target = tmp_path / "figures.json"
    monkeypatch.setenv(key_figures.FIGURES_ENV, str(target))
    assert key_figures.record("loss", torch.tensor(1.5), "nats") == torch.tensor(1.5)
    key_figures.record("ratio", np.float32(0.25))
    key_figures.record("device", torch.device("cpu"))
    assert json.loads(target.read_text()) == {"loss": {"value": 1.5, "unit": "nats"},
                                              "ratio": {"value": 0.25, "unit": ""},
                                              "device": {"value": "cpu", "unit": ""}}


def test_outside_a_run_nothing_is_written(monkeypatch, tmp_path):
    monkeypatch.delenv(key_figures.FIGURES_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert key_figures.record("x", 3) == 3 and not list(tmp_path.iterdir())
