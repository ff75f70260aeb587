"""course_utils.finetuning.lora_vs_qlora: mean and spread over seeds, and verdicts drawn only beyond the spread."""

from __future__ import annotations

import pytest

from course_utils.finetuning import lora_vs_qlora


def rows(qlora_seconds, qlora_loss=(1.0, 1.1, 0.9), qlora_match=None):
    out = []
    for seed in range(3):
        out.append({"method": "LoRA", "seed": seed, "model MiB": 4.0, "training peak above start MiB": 50.0 + seed,
                    "s per step": 0.20 + 0.01 * seed, "CPU s per step": 0.3, "held-out loss": 1.0 + 0.1 * (seed - 1)})
        out.append({"method": "QLoRA", "seed": seed, "model MiB": 1.5, "training peak above start MiB": 52.0 - seed,
                    "s per step": qlora_seconds[seed], "CPU s per step": 0.3, "held-out loss": qlora_loss[seed]})
        if qlora_match is not None:
            out[-2]["exact match"], out[-1]["exact match"] = 0.9 + 0.01 * seed, qlora_match[seed]
    return out


def test_a_clear_slowdown_is_a_verdict_and_a_small_one_is_not():
    slow = lora_vs_qlora.claims_verdicts(rows((0.30, 0.31, 0.32)))
    assert slow[1]["verdict"] == "slower beyond the spread, but by 48%, not about 10%"
    assert slow[0]["verdict"].startswith("yes for the model; training peak: within the spread")
    assert slow[2]["verdict"] == "consistent: no difference in held-out loss beyond the spread of 3 seeds"
    close = lora_vs_qlora.claims_verdicts(rows((0.19, 0.22, 0.21)))
    assert close[1]["verdict"].startswith("cannot tell") and "3 seeds" in close[1]["verdict"]
    about = lora_vs_qlora.claims_verdicts(rows((0.225, 0.23, 0.235)), steps=15)
    assert about[1]["verdict"] == "yes: about 10% slower (10%), beyond the spread"
    assert about[2]["verdict"].endswith("beyond the spread of 3 seeds of 15 steps")
    assert "3 seeds of 15 steps" in about[0]["verdict"]
    faster = lora_vs_qlora.claims_verdicts(rows((0.10, 0.11, 0.12)))
    assert faster[1]["verdict"] == "no: faster beyond the spread"


def test_an_accuracy_gap_beyond_the_spread_is_named():
    worse = lora_vs_qlora.claims_verdicts(rows((0.2, 0.21, 0.22), qlora_loss=(2.0, 2.1, 2.2)))
    assert worse[2]["verdict"] == "no: QLoRA's held-out loss higher beyond the spread of 3 seeds"


def test_the_exact_match_counts_in_the_accuracy_verdict_where_every_run_was_scored():
    same = lora_vs_qlora.claims_verdicts(rows((0.2, 0.21, 0.22), qlora_match=(0.9, 0.91, 0.92)))
    assert same[2]["verdict"].startswith("consistent: no difference in held-out loss or exact match")
    assert "exact match +0 points" in same[2]["measured here"]
    lower = lora_vs_qlora.claims_verdicts(rows((0.2, 0.21, 0.22), qlora_match=(0.80, 0.82, 0.81)), steps=150)
    assert lower[2]["verdict"] == "no: QLoRA's exact match lower beyond the spread of 3 seeds of 150 steps"
    assert "exact match" in lora_vs_qlora.summary_table(rows((0.3, 0.31, 0.32), qlora_match=(0.8, 0.8, 0.8)))[0]
    assert "exact match" not in lora_vs_qlora.summary_table(rows((0.3, 0.31, 0.32)))[0]


def test_summary_table_shows_mean_and_spread():
    table = lora_vs_qlora.summary_table(rows((0.30, 0.31, 0.32)))
    assert [t["method"] for t in table] == ["LoRA", "QLoRA"] and table[0]["seeds"] == "3"
    assert table[1]["s per step"].startswith("0.31 ±")


def test_run_row_reads_the_meter():
    class Meter:
        peak = None
        seconds_per_step = 0.5
        cpu_seconds_per_step = 0.7

    row = lora_vs_qlora.run_row("LoRA", 1, 2**20, Meter(), 1.5)
    assert row["model MiB"] == 1.0 and row["s per step"] == 0.5 and row["held-out loss"] == 1.5
    assert "exact match" not in row and lora_vs_qlora.run_row("LoRA", 1, 1, Meter(), 1.5, 0.75)["exact match"] == 0.75
    assert row["training peak above start MiB"] != row["training peak above start MiB"]  # NaN: not measured
    with pytest.raises(KeyError):
        lora_vs_qlora.claims_verdicts([row])
    with pytest.raises(ValueError, match="at least two runs"):
        lora_vs_qlora.summary_table([row])
