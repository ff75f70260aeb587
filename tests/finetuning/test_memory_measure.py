"""course_utils.finetuning.memory_measure: the peak of a block, what the device holds, sizes in readable units."""

from __future__ import annotations

import torch

from course_utils.finetuning import memory_measure


def test_peak_memory_sees_an_allocation():
    with memory_measure.measure_peak_memory("cpu") as measured:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        block += 1
    del block
    assert measured["peak"].increase_bytes > 32 * 2**20
    assert "resident" in measured["peak"].method
    assert set(memory_measure.memory_stats("cpu")) >= {"device", "process resident memory"}


def test_human_bytes_and_model_bytes():
    assert memory_measure.human_bytes(3 * 2**30) == "3.00 GiB" and memory_measure.human_bytes(10) == "10 B"
    assert memory_measure.model_bytes(torch.nn.Linear(4, 4, bias=False)) == 16 * 4
