"""Measuring memory: the peak a block of code reaches, what the device holds now, and the bytes of a model.

On a CUDA GPU the peak is ``torch.cuda.max_memory_allocated`` (tensors only). On a CPU it is the process's resident
memory: on Linux the kernel's own high-water mark (VmHWM), reset before the block; elsewhere sampled every 5 ms. The
CPU figure counts every byte the process touches (Python, libraries, the allocator's caches), not only tensors.
:class:`course_utils.finetuning.trainer_callbacks.TrainingMeter` measures a ``trainer.train()`` with it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psutil
import torch

from course_utils.ground import machine


@dataclass(frozen=True)
class MemoryPeak:
    """Peak memory while a block ran, above what was in use when it started, and how it was measured."""

    peak_bytes: int
    start_bytes: int
    method: str

    @property
    def increase_bytes(self) -> int:
        return max(0, self.peak_bytes - self.start_bytes)


def _rss_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


def _read_status(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _trim_heap() -> None:
    """Give memory that was freed back to the operating system (glibc's malloc_trim), so each measurement starts
    from what is really in use rather than from what earlier runs left cached in the heap."""
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


class _Sampler(threading.Thread):
    def __init__(self, every: float = 0.005):
        super().__init__(daemon=True)
        self.every, self.peak, self.done = every, _rss_bytes(), threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.peak = max(self.peak, _rss_bytes())


@contextlib.contextmanager
def measure_peak_memory(device: torch.device | str | None = None) -> Iterator[dict[str, MemoryPeak]]:
    """Measure peak memory of the block: ``with measure_peak_memory(dev) as m: ...; m["peak"]`` afterwards.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors only) after resetting the peak. CPU on Linux: the kernel's
    own high-water mark of the process's resident memory (VmHWM), reset through ``/proc/self/clear_refs``: every
    byte the process touches, Python and libraries included. Elsewhere: resident memory sampled every 5 ms.
    """
    device = machine.pick_device(device)
    out: dict[str, MemoryPeak] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        yield out
        torch.cuda.synchronize(device)
        out["peak"] = MemoryPeak(torch.cuda.max_memory_allocated(device), start,
                                 "torch.cuda.max_memory_allocated (GPU tensors)")
        return
    _trim_heap()
    start = _rss_bytes()
    can_reset = False
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # 5: reset the peak resident set size to the current one
        can_reset = _read_status("VmHWM") is not None
    sampler = None if can_reset else _Sampler()
    if sampler is not None:
        sampler.start()
    try:
        yield out
    finally:
        if sampler is not None:
            sampler.done.set()
            sampler.join()
            out["peak"] = MemoryPeak(sampler.peak, start, "process resident memory, sampled every 5 ms (psutil)")
        else:
            out["peak"] = MemoryPeak(int(_read_status("VmHWM") or 0), start,
                                     "process peak resident memory (Linux VmHWM, reset before the run)")


def memory_stats(device: torch.device | str | None = None) -> dict[str, Any]:
    """What the device holds now: GPU memory on CUDA (allocated, reserved, total), process RAM on the CPU."""
    device = machine.pick_device(device)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return {"device": torch.cuda.get_device_name(device),
                "allocated": human_bytes(torch.cuda.memory_allocated(device)),
                "reserved": human_bytes(torch.cuda.memory_reserved(device)), "total": human_bytes(total)}
    total, available = machine.system_memory()
    return {"device": device.type, "process resident memory": human_bytes(_rss_bytes()),
            "system total": human_bytes(total), "system available": human_bytes(available)}


def model_bytes(model: Any) -> int:
    """Bytes of the model's parameters and buffers as stored (4-bit weights count half a byte each)."""
    if hasattr(model, "get_memory_footprint"):
        return int(model.get_memory_footprint())
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def human_bytes(n: float) -> str:
    """``n`` bytes in KiB, MiB or GiB, whichever reads best (``"1.80 MiB"``)."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def release_memory() -> None:
    """Collect garbage and give cached GPU memory back (call after ``del`` of models you no longer need)."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
