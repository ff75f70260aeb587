"""The speed ladder: what applies where, what is measured, and how the table reads."""

from __future__ import annotations

import pytest
import torch

from course_utils.models.gpt import GPTConfig
from course_utils.training.speed import (
    RUNGS,
    LadderRow,
    SavedTensorBytes,
    SpeedSettings,
    ladder_table,
    lecture_ladder_table,
    measure_training_speed,
    memory_over_the_row_above,
    run_ladder,
    why_not,
)

TINY = GPTConfig(vocab_size=100, context_length=64, n_embd=32, n_layer=1, n_head=2)
CPU = torch.device("cpu")


def test_cuda_only_rows_say_why_on_a_cpu():
    assert "tensor cores" in why_not({"tf32": True}, CPU, TINY)
    assert "COMPILE_ON_CPU" in why_not({"compile": True}, CPU, TINY)
    assert why_not({"fused_adamw": True}, CPU, TINY) is None
    assert why_not({"pad_vocab": True}, CPU, GPTConfig(vocab_size=128)) is not None
    assert why_not({"pad_vocab": True}, CPU, TINY) is None


def test_saved_tensor_bytes_counts_each_storage_once():
    counter = SavedTensorBytes()
    x = torch.randn(100, requires_grad=True)
    with counter.hooks():
        (x * x).sum()
    assert counter.bytes == 400  # x is saved twice (both factors) but held once


def test_explicit_attention_holds_more_memory_than_sdpa():
    long = GPTConfig(vocab_size=100, context_length=128, n_embd=16, n_layer=1, n_head=4)
    explicit = measure_training_speed(long, 2, 128, SpeedSettings(attention="explicit"), steps=1, warmup=1)
    sdpa = measure_training_speed(long, 2, 128, SpeedSettings(attention="sdpa"), steps=1, warmup=1)
    assert explicit["tokens_per_second"] > 0 and sdpa["tokens_per_second"] > 0
    assert explicit["peak_memory_mib"] > sdpa["peak_memory_mib"]  # the (time x time) matrices are kept for backward


def test_ladder_on_cpu_measures_what_applies_and_explains_the_rest():
    rows = run_ladder(TINY, 2, 16, device="cpu", steps=1, warmup=1, progress=False)
    assert [r.name for r in rows] == [name for name, _, _ in RUNGS]
    assert rows[0].speedup == pytest.approx(1.0)
    skipped = {r.name for r in rows if r.skipped}
    assert skipped == {"+ TF32 matmuls", "+ torch.compile"}
    assert rows[-1].settings.batch_multiplier == 2
    for index, row in enumerate(rows):   # a change measured slower is absent from every row below it
        if not row.kept:
            (key,) = dict(next(turn_on for name, _, turn_on in RUNGS if name == row.name))
            assert all(getattr(below.settings, key) == getattr(SpeedSettings(), key) for below in rows[index + 1:])
    table = ladder_table(rows)
    assert table[1]["tokens/s"] == "-" and table[1]["note"].startswith("not run:")
    assert float(table[0]["x baseline"]) == 1.0


def test_a_slower_change_is_dropped(monkeypatch):
    import course_utils.training.speed as speed

    def fake(cfg, batch, seq, settings, **kwargs):  # autocast halves the speed, everything else is neutral
        return {"tokens_per_second": 50.0 if settings.autocast else 100.0, "peak_memory_mib": 1.0,
                "first_step_seconds": 0.1}

    monkeypatch.setattr(speed, "measure_training_speed", fake)
    rows = {r.name: r for r in run_ladder(TINY, 2, 16, progress=False)}
    assert not rows["+ 16-bit autocast"].kept and rows["+ 16-bit autocast"].speedup == 0.5
    assert rows["+ SDPA attention"].kept and not rows["+ SDPA attention"].settings.autocast
    assert "not kept" in ladder_table(list(rows.values()))[3]["note"]


def test_the_lectures_table():
    rows = lecture_ladder_table()
    assert rows[0]["tokens/s"] == "12,526" and rows[-1]["tokens/s"] == "112,046"
    assert rows[-1]["x baseline"] == "8.95"


def test_the_sdpa_row_names_the_kernel_pytorch_picks(monkeypatch):
    import course_utils.training.speed as speed

    assert speed.sdpa_kernel(CPU, torch.float32, 2, 16, 16) == "PyTorch's fused flash-style CPU kernel"
    rows = {r.name: r for r in run_ladder(TINY, 2, 16, steps=1, warmup=0, progress=False)}
    assert rows["+ SDPA attention"].change == "F.scaled_dot_product_attention: PyTorch's fused flash-style CPU kernel here"
    # On a T4 (compute capability 7.5) PyTorch picks the memory-efficient kernel: FlashAttention needs Ampere.
    assert speed.kernel_in_words("EFFICIENT_ATTENTION", "cuda").startswith("memory-efficient attention (not Flash")
    assert speed.kernel_in_words("FLASH_ATTENTION", "cuda") == "FlashAttention"
    assert speed.kernel_in_words("MATH", "cuda").startswith("the unfused math path")
    monkeypatch.delattr(torch, "_fused_sdp_choice")
    assert speed.sdpa_kernel(CPU, torch.float32, 2, 16, 16) is None
    assert "not reported" in speed.sdpa_note(TINY, 16, SpeedSettings(attention="sdpa"), CPU)


def test_tf32_uses_the_fp32_precision_api_and_restores_it():
    from course_utils.training.speed import tf32_matmuls

    matmul = torch.backends.cuda.matmul
    if not hasattr(matmul, "fp32_precision"):
        pytest.skip(f"torch {torch.__version__} has only the legacy allow_tf32 flags")
    before = matmul.fp32_precision
    with tf32_matmuls(True):
        assert matmul.fp32_precision == "tf32"
    assert matmul.fp32_precision == before
    with tf32_matmuls(False):
        assert matmul.fp32_precision == "ieee"
    assert matmul.fp32_precision == before


def test_memory_over_the_row_above_compares_with_the_row_it_was_measured_on():
    def row(name, mib, kept=True, skipped=None):
        return LadderRow(name, "", skipped=skipped, peak_memory_mib=mib, kept=kept)

    rows = [row("base", 40.0), row("tf32", None, skipped="no GPU"), row("fused", 30.0, kept=False),
            row("sdpa", 20.0), row("compile", None, skipped="too slow")]
    assert memory_over_the_row_above(rows, "sdpa") == 0.5  # over the base: the unkept row was not built upon
    assert memory_over_the_row_above(rows, "compile") is None and memory_over_the_row_above(rows, "base") is None
