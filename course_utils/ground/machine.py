"""This machine: which device and precision to use, Colab detection, and how much memory the device has.

torch is imported inside the functions, never at module level, so that the environment report
(:mod:`course_utils.course.env`) still works, and says how to fix it, on a machine where torch is missing or broken.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

GIB = 2**30

# ---------------------------------------------------------------------------------------------------------------
# Device and precision


def _mps_usable(torch_module: Any) -> bool:
    """MPS counts only when this torch build has it (is_built) and macOS plus an Apple GPU offer it (is_available).

    is_available alone is False on Intel Macs and old macOS; is_built is False on Linux/Windows wheels.
    Checking both gives one clear answer on every platform, and getattr guards torch builds without mps at all.
    """
    backend = getattr(getattr(torch_module, "backends", None), "mps", None)
    if backend is None:
        return False
    try:
        return bool(backend.is_available() and backend.is_built())
    except Exception:  # noqa: BLE001 - a broken MPS backend means "not usable", never a crash
        return False


def pick_device(prefer: str | None = None) -> torch.device:
    """The device this workbook computes on: CUDA, then Apple MPS, then CPU; ``prefer`` forces one.

    ``prefer`` is ``None``/``"auto"`` (choose), or ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"``.
    """
    import torch

    if prefer is None or str(prefer).strip().lower() in ("", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_usable(torch):
            return torch.device("mps")
        return torch.device("cpu")
    try:
        wanted = torch.device(str(prefer).strip().lower())
    except RuntimeError:
        raise ValueError(
            f"Unknown device {prefer!r}: use None or 'auto' to choose automatically, or 'cuda', 'cuda:N', 'mps', 'cpu'."
        ) from None
    if wanted.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"Device {prefer!r} was asked for, but torch sees no CUDA GPU (torch {torch.__version__}, "
                f"CUDA build: {torch.version.cuda or 'none'}). On Colab choose Runtime > Change runtime type > "
                "T4 GPU; elsewhere install a CUDA build of torch, or set the device to None to use what is there."
            )
        count = torch.cuda.device_count()
        if wanted.index is not None and wanted.index >= count:
            raise RuntimeError(f"Device {prefer!r} does not exist: this machine has {count} CUDA GPU(s), "
                               f"numbered 0 to {count - 1}.")
    elif wanted.type == "mps":
        if not _mps_usable(torch):
            raise RuntimeError(
                f"Device {prefer!r} was asked for, but MPS is not usable here (needs an Apple-silicon Mac with "
                "macOS 12.3 or newer and a torch build with MPS). Set the device to None or 'cpu'."
            )
    elif wanted.type != "cpu":
        raise ValueError(f"Device type {wanted.type!r} is not supported by this workbook: use 'cuda', 'mps' or 'cpu'.")
    return wanted


@dataclass(frozen=True)
class Precision:
    """How to hold weights and run math on one device.

    ``dtype`` is for weights that are trained (kept in float32: autocast does the fast low-precision math and
    the optimizer updates full-precision weights). ``inference_dtype`` is for frozen weights that are only run
    (inference, the frozen base of LoRA): half the memory where the device computes 16-bit well.
    """

    device_type: str
    dtype: torch.dtype
    inference_dtype: torch.dtype
    autocast_dtype: torch.dtype | None
    use_grad_scaler: bool
    reason: str

    @property
    def name(self) -> str:
        """A short label such as ``'bf16 autocast'`` or ``'fp32'``."""
        if self.autocast_dtype is None:
            return _short_dtype(self.dtype)
        return f"{_short_dtype(self.autocast_dtype)} autocast" + (" + GradScaler" if self.use_grad_scaler else "")

    def __str__(self) -> str:
        return f"{self.name} on {self.device_type}: {self.reason}"


def _short_dtype(dtype: Any) -> str:
    return {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}.get(str(dtype), str(dtype))


def pick_precision(device: torch.device | str | None = None) -> Precision:
    """The precision recipe for ``device`` (default: :func:`pick_device`), with the reason in words."""
    import torch

    device = pick_device() if device is None else torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return precision_for("cuda", torch.cuda.get_device_capability(index), torch.cuda.get_device_name(index))
    return precision_for(device.type)


def precision_for(device_type: str, capability: tuple[int, int] | None = None, gpu_name: str = "This GPU") -> Precision:
    """The precision rule for a device type (and, for CUDA, its compute capability), without needing the device."""
    import torch

    if device_type == "cuda":
        if capability is None:
            raise ValueError("For CUDA pass the compute capability, e.g. (8, 0) for an A100 or (7, 5) for a T4.")
        major, minor = capability
        if (major, minor) >= (8, 0):
            return Precision(
                "cuda", torch.float32, torch.bfloat16, torch.bfloat16, False,
                f"{gpu_name} (compute capability {major}.{minor}) computes bfloat16 natively; bf16 keeps fp32's "
                "exponent range, so gradients do not underflow and no GradScaler is needed.",
            )
        # Before Ampere (T4 is 7.5) bf16 is only emulated: torch.cuda.is_bf16_supported() says True by default
        # because it counts emulation, so we decide on the compute capability instead.
        return Precision(
            "cuda", torch.float32, torch.float16, torch.float16, True,
            f"{gpu_name} (compute capability {major}.{minor}) has fast fp16 but no native bf16; fp16's small range "
            "lets small gradients underflow to zero, so a GradScaler scales the loss up before backward.",
        )
    if device_type == "mps":
        return Precision(
            "mps", torch.float32, torch.float16, None, False,
            "Apple MPS: training stays in fp32 without autocast, because autocast and GradScaler support on MPS "
            "depends on the torch and macOS versions, and the course's small models fit in unified memory "
            "anyway; frozen weights for inference load in fp16, which MPS runs well.",
        )
    if device_type == "cpu":
        return Precision(
            "cpu", torch.float32, torch.float32, None, False,
            "CPU: fp32 throughout. bf16 autocast is only faster on CPUs with bf16 instructions (AVX-512 BF16, "
            "AMX); on typical laptops and CI runners it is emulated and slower, the tiny models fit in RAM in "
            "fp32 anyway, and fp32 gives the same numbers on every machine.",
        )
    raise ValueError(f"Unknown device type {device_type!r}: use 'cuda', 'mps' or 'cpu'.")


# Example devices for precision_rules(): one per rule.
EXAMPLE_DEVICES: tuple[tuple[str, str, tuple[int, int] | None], ...] = (
    ("A100 / L4 / H100 (CUDA, Ampere or newer)", "cuda", (8, 0)),
    ("T4 (free Colab GPU)", "cuda", (7, 5)),
    ("Apple silicon (MPS)", "mps", None),
    ("CPU", "cpu", None),
)


def precision_rules() -> list[dict[str, str]]:
    """The precision chosen for one example device per rule (the same on every machine)."""
    rows = []
    for label, device_type, capability in EXAMPLE_DEVICES:
        p = precision_for(device_type, capability, gpu_name=label.split(" (")[0])
        rows.append({"device": label, "autocast": _short_dtype(p.autocast_dtype) if p.autocast_dtype else "none",
                     "GradScaler": "yes" if p.use_grad_scaler else "no", "trained weights": _short_dtype(p.dtype),
                     "frozen weights": _short_dtype(p.inference_dtype)})
    return rows


def autocast(precision: Precision, device: torch.device | str | None = None) -> contextlib.AbstractContextManager:
    """A context manager for the forward pass: ``torch.autocast`` where the precision uses it, else a no-op."""
    if precision.autocast_dtype is None:
        return contextlib.nullcontext()
    import torch

    device_type = torch.device(device).type if device is not None else precision.device_type
    return torch.autocast(device_type=device_type, dtype=precision.autocast_dtype)


def grad_scaler(precision: Precision) -> Any:
    """A ``torch.amp.GradScaler``: active for fp16 autocast on CUDA, otherwise a disabled one (a pass-through).

    Use it the same way on every device: ``scaler.scale(loss).backward(); scaler.step(opt); scaler.update()``.
    """
    import torch

    enabled = precision.use_grad_scaler and precision.device_type == "cuda" and torch.cuda.is_available()
    return torch.amp.GradScaler("cuda" if enabled else "cpu", enabled=enabled)


# ---------------------------------------------------------------------------------------------------------------
# Colab


def in_colab() -> bool:
    """True inside a Google Colab runtime (the same test as the notebooks' setup cell)."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


# ---------------------------------------------------------------------------------------------------------------
# Memory of this machine


@dataclass(frozen=True)
class MachineMemory:
    """How much memory the chosen device can use, and which number the will-it-fit tables compare against."""

    device_type: str
    name: str
    total_bytes: int
    available_bytes: int
    system_total_bytes: int
    system_available_bytes: int
    basis: str  # which number fit tables use, in words

    @property
    def usable_bytes(self) -> int:
        """The memory fit tables compare against (see ``basis``)."""
        return self.total_bytes if self.device_type in ("cuda", "mps") else self.available_bytes

    def __str__(self) -> str:
        return (f"{self.name}: {self.total_bytes / GIB:.1f} GiB total, {self.available_bytes / GIB:.1f} GiB free "
                f"now; fit tables use {self.usable_bytes / GIB:.1f} GiB ({self.basis})")


def system_memory() -> tuple[int, int]:
    """(total, available) system RAM in bytes."""
    vm = psutil.virtual_memory()
    return int(vm.total), int(vm.available)


def machine_memory(device: torch.device | str | None = None) -> MachineMemory:
    """The memory of ``device`` (default: :func:`pick_device`): GPU memory on CUDA, unified memory on MPS, RAM on CPU."""
    import torch

    device = pick_device() if device is None else torch.device(device)
    sys_total, sys_available = system_memory()
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
        return MachineMemory("cuda", torch.cuda.get_device_name(index), int(total), int(free), sys_total,
                             sys_available, "all of the GPU's memory: a notebook has the GPU to itself")
    if device.type == "mps":
        recommended = getattr(torch.mps, "recommended_max_memory", None)
        limit = int(recommended()) if callable(recommended) else sys_total
        return MachineMemory("mps", f"Apple GPU ({platform.machine()}), unified memory", limit, sys_available,
                             sys_total, sys_available,
                             "Metal's recommended working-set size: GPU and CPU share the same RAM")
    return MachineMemory("cpu", f"CPU ({platform.machine() or 'unknown'}), system RAM", sys_total, sys_available,
                         sys_total, sys_available, "RAM available now: other programs hold the rest")
