"""course_utils.ground.machine: device and precision choice, Colab detection and memory."""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest
import torch

from course_utils.ground import machine


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Never probe the network from a test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def fake_cuda(monkeypatch):
    """Pretend there is one CUDA GPU; the test sets its compute capability."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Fake GPU")

    def capability(major: int, minor: int) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (major, minor))

    return capability


# --- pick_device -------------------------------------------------------------------------------------------------


def test_cpu_when_nothing_else(no_gpu):
    assert machine.pick_device() == torch.device("cpu")
    assert machine.pick_device("auto") == torch.device("cpu")


def test_cuda_first(no_gpu, fake_cuda, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_built", lambda: True)
    assert machine.pick_device().type == "cuda"


def test_mps_needs_available_and_built(no_gpu, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert machine.pick_device().type == "cpu", "is_available without is_built must not pick MPS"
    monkeypatch.setattr(torch.backends.mps, "is_built", lambda: True)
    assert machine.pick_device().type == "mps"


def test_prefer_forces_and_explains(no_gpu):
    assert machine.pick_device("cpu") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="Colab"):
        machine.pick_device("cuda")
    with pytest.raises(RuntimeError, match="MPS is not usable"):
        machine.pick_device("mps")
    with pytest.raises(ValueError, match="cuda"):
        machine.pick_device("tpu")


def test_prefer_missing_gpu_index(fake_cuda):
    fake_cuda(8, 0)
    assert machine.pick_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(RuntimeError, match="1 CUDA GPU"):
        machine.pick_device("cuda:3")


# --- pick_precision ----------------------------------------------------------------------------------------------


def test_precision_ampere_is_bf16_without_scaler(fake_cuda):
    fake_cuda(8, 0)
    precision = machine.pick_precision("cuda")
    assert precision.autocast_dtype == torch.bfloat16 and not precision.use_grad_scaler
    assert precision.dtype == torch.float32 and precision.inference_dtype == torch.bfloat16
    assert "bf16" in precision.name and "8.0" in precision.reason


def test_precision_t4_is_fp16_with_scaler(fake_cuda, monkeypatch):
    fake_cuda(7, 5)
    # torch counts emulated bf16 as supported on a T4; the choice must not rely on that.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    precision = machine.pick_precision("cuda")
    assert precision.autocast_dtype == torch.float16 and precision.use_grad_scaler
    assert "GradScaler" in precision.name and "7.5" in precision.reason


def test_precision_mps_and_cpu():
    mps = machine.pick_precision("mps")
    assert mps.autocast_dtype is None and not mps.use_grad_scaler and mps.dtype == torch.float32
    assert mps.inference_dtype == torch.float16 and "MPS" in mps.reason
    cpu = machine.pick_precision("cpu")
    assert (cpu.dtype, cpu.inference_dtype, cpu.autocast_dtype, cpu.use_grad_scaler) == (
        torch.float32, torch.float32, None, False)
    assert "bf16" in cpu.reason and cpu.name == "fp32"


def test_precision_rules_cover_every_device_kind():
    rows = machine.precision_rules()
    assert [(r["autocast"], r["GradScaler"]) for r in rows] == [
        ("bf16", "no"), ("fp16", "yes"), ("none", "no"), ("none", "no")]
    assert {r["trained weights"] for r in rows} == {"fp32"}
    with pytest.raises(ValueError, match="compute capability"):
        machine.precision_for("cuda")
    with pytest.raises(ValueError, match="Unknown device type"):
        machine.precision_for("xla")


def test_autocast_and_scaler_are_noops_on_cpu():
    precision = machine.pick_precision("cpu")
    with machine.autocast(precision):
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == torch.float32
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = machine.grad_scaler(precision)
    assert not scaler.is_enabled()
    before = model.weight.detach().clone()
    loss = model(torch.ones(1, 2)).sum()
    scaled = scaler.scale(loss)
    assert scaled is loss
    scaled.backward()
    scaler.step(optimizer)
    scaler.update()
    assert not torch.equal(before, model.weight.detach()), "the disabled scaler must still step the optimizer"


def test_autocast_uses_the_autocast_dtype():
    precision = machine.Precision("cpu", torch.float32, torch.bfloat16, torch.bfloat16, False, "test")
    with machine.autocast(precision):
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == torch.bfloat16


def test_fp16_scaler_without_cuda_is_disabled_quietly(no_gpu, recwarn):
    precision = machine.Precision("cuda", torch.float32, torch.float16, torch.float16, True, "test")
    assert not machine.grad_scaler(precision).is_enabled()
    assert not [w for w in recwarn if "GradScaler" in str(w.message)]


# --- seeding, Colab ----------------------------------------------------------------------------------------------


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_in_colab(monkeypatch):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert not machine.in_colab()
    monkeypatch.setitem(sys.modules, "google.colab", object())
    assert machine.in_colab()


# --- memory ------------------------------------------------------------------------------------------------------


def test_machine_memory_cpu(no_gpu):
    memory = machine.machine_memory()
    assert memory.device_type == "cpu"
    assert 0 < memory.available_bytes <= memory.total_bytes
    assert memory.usable_bytes == memory.available_bytes
    assert "GiB" in str(memory)


def test_system_memory_is_psutils():
    total, available = machine.system_memory()
    assert 0 < available <= total


def test_machine_memory_mps_uses_unified_memory(monkeypatch):
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 12 * machine.GIB, raising=False)
    memory = machine.machine_memory("mps")
    assert memory.usable_bytes == 12 * machine.GIB and "unified" in memory.name
