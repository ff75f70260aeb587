"""This machine: which device and precision to use, seeding, Colab detection, memory, and an environment report.

torch is imported inside the functions, never at module level, so that :func:`environment_report` still works
(and says how to fix it) on a machine where torch is missing or broken.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from course_utils.course import hub, profiles, project, sources

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

MIN_PYTHON = (3, 11)  # pyproject.toml's requires-python (a test keeps the two equal)
GIB = 2**30

# The packages the report checks: (import name, distribution name). Minimum versions come from pyproject.toml,
# the one place where they are written down.
COURSE_PACKAGES: tuple[tuple[str, str], ...] = (
    ("torch", "torch"),
    ("transformers", "transformers"),
    ("peft", "peft"),
    ("bitsandbytes", "bitsandbytes"),
    ("datasets", "datasets"),
    ("accelerate", "accelerate"),
    ("trl", "trl"),
    ("safetensors", "safetensors"),
    ("tokenizers", "tokenizers"),
    ("ipywidgets", "ipywidgets"),
    ("matplotlib", "matplotlib"),
    ("tqdm", "tqdm"),
)


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
# Seeding, Colab


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
    """(total, available) system RAM in bytes; psutil when installed, else the OS's own counters."""
    try:
        import psutil

        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)
    except ImportError:
        pass
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        available = os.sysconf("SC_AVPHYS_PAGES") * page_size
        return int(pages * page_size), int(available)
    except (ValueError, OSError, AttributeError):
        return 0, 0


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


# ---------------------------------------------------------------------------------------------------------------
# What the chosen profile will load


def profile_plan(profile: profiles.Profile) -> list[dict[str, str]]:
    """For each model and dataset role of ``profile``: its name and where it would load from (never raises)."""
    rows = []
    for kind, table, resolve in (("model", profile.models, sources.resolve_model),
                                 ("dataset", profile.datasets, sources.resolve_dataset)):
        for role, name in table.items():
            try:
                where = str(resolve(name))
                where = where.split(" from ", 1)[1] if " from " in where else where
            except Exception as exc:  # noqa: BLE001 - the plan reports every problem instead of stopping
                where = f"NOT AVAILABLE ({str(exc).split(':')[0]}): see environment_report() for the fix"
            rows.append({"kind": kind, "role": role, "name": name, "loads from": where})
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Environment report

Status = Literal["OK", "FAIL", "WARN", "INFO"]


@dataclass(frozen=True)
class Requirement:
    """One line of the environment report; ``fix`` says what to do when the status is FAIL or WARN."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    topic: str = "troubleshooting"  # the README's section (its anchor) that explains the fix

    @property
    def ok(self) -> bool:
        return self.status != "FAIL"

    def __str__(self) -> str:
        line = f"[{self.status}]".ljust(7) + f"{self.name}: {self.detail}"
        if not self.fix or self.status not in ("FAIL", "WARN"):
            return line
        return line + f"\n       fix: {self.fix}\n       more: {troubleshooting_url(self.topic)}"


def troubleshooting_url(topic: str = "troubleshooting") -> str:
    """The README's troubleshooting section (``topic``: one of its headings' anchors) on GitHub."""
    try:
        settings = project.tool_settings()
        repo, branch = settings["github_repo"], settings.get("branch", "main")
    except Exception:  # noqa: BLE001 - an installed copy without pyproject.toml still prints its report
        return f"README.md#{topic}"
    return f"https://github.com/{repo}/blob/{branch}/README.md#{topic}"


INSTALL_TOPIC = "restarting-after-an-install"


def version_at_least(installed: str, minimum: str) -> bool:
    """True when version string ``installed`` is at least ``minimum`` (local tags such as ``+cpu`` ignored)."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(installed).release >= Version(minimum).release
    except InvalidVersion:
        return False


def _install_hint(spec: str, flag: str = "") -> str:
    pip = f"pip install {flag + ' ' if flag else ''}'{spec}'"
    if in_colab():
        return f"run `%{pip}` in a cell, then Runtime > Restart session"
    return f"run `{pip}` in the workbook's virtual environment, then restart the kernel"


def check_package(import_name: str, dist_name: str, minimum: str | None, *, import_it: bool = False) -> Requirement:
    """Whether one package is installed (and imports, with ``import_it``) at ``minimum`` or newer."""
    spec = f"{dist_name}>={minimum}" if minimum else dist_name
    label = dist_name + (f" >= {minimum}" if minimum else "")
    try:
        if import_it or sys.modules.get(import_name) is not None:
            importlib.import_module(import_name)
            found = True
        else:
            found = importlib.util.find_spec(import_name) is not None
    except ModuleNotFoundError as exc:
        if exc.name != import_name:
            return Requirement(label, "FAIL", f"installed but `import {import_name}` fails: {exc}",
                               _install_hint(spec, "--force-reinstall"), INSTALL_TOPIC)
        found = False
    except Exception as exc:  # noqa: BLE001 - a broken install is a FAIL with its error, not a crash
        return Requirement(label, "FAIL", f"installed but `import {import_name}` fails ({type(exc).__name__}: "
                           f"{str(exc)[:120]})", _install_hint(spec, "--force-reinstall"), INSTALL_TOPIC)
    if not found:
        return Requirement(label, "FAIL", "not installed", _install_hint(spec), INSTALL_TOPIC)
    try:
        version = importlib.metadata.version(dist_name)
    except importlib.metadata.PackageNotFoundError:
        version = str(getattr(sys.modules.get(import_name), "__version__", "") or "")
    if not version:
        return Requirement(label, "WARN", "installed, version unknown",
                           f"check that it is at least {minimum}" if minimum else "")
    if minimum and not version_at_least(version, minimum):
        return Requirement(label, "FAIL", f"{version} is too old", _install_hint(spec, "-U"), INSTALL_TOPIC)
    return Requirement(label, "OK", version)


def _check_python() -> Requirement:
    version = ".".join(map(str, sys.version_info[:3]))
    needed = ".".join(map(str, MIN_PYTHON))
    if sys.version_info[:2] < MIN_PYTHON:
        return Requirement(f"Python >= {needed}", "FAIL", version,
                           f"install Python {needed} or newer (e.g. `uv python install 3.11`) and recreate the venv")
    return Requirement(f"Python >= {needed}", "OK", f"{version} ({platform.system()} {platform.machine()})")


def _check_embedded() -> list[Requirement]:
    tiny = profiles.PROFILES["tiny"]
    fix = ("run `make data` to build data/" if not in_colab() else
           "the clone in /content/llm-workbook is incomplete: delete it and rerun the setup cell")
    out = []
    for kind, present, wanted in (("models", sources.embedded_models(), sorted(set(tiny.models.values()))),
                                  ("datasets", sources.embedded_datasets(), sorted(set(tiny.datasets.values())))):
        missing = [name for name in wanted if name not in present]
        name = f"embedded {kind} (data/{kind}/)"
        if missing:
            out.append(Requirement(name, "FAIL", f"missing {', '.join(missing)} (found: {', '.join(present) or 'none'})",
                                   fix))
        else:
            out.append(Requirement(name, "OK", ", ".join(present)))
    return out


def _check_device() -> list[Requirement]:
    device = pick_device()
    precision = pick_precision(device)
    where = f"{device.type} ({machine_memory(device).name})" if device.type != "cpu" else "cpu"
    out = [Requirement("device", "OK", where), Requirement("precision", "INFO", f"{precision.name}: {precision.reason}")]
    if device.type == "cpu":
        out.append(Requirement("GPU", "INFO", "none found: the tiny profile runs everything on the CPU; "
                               "on Colab pick Runtime > Change runtime type > T4 GPU for the real models"))
    return out


def _check_4bit_kernel() -> list[Requirement]:
    """Which bitsandbytes code runs 4-bit layers here: said once, here, instead of bitsandbytes' import warning.

    On a CPU with AVX-512 BF16, bitsandbytes looks for a faster kernel that the optional ``kernels`` package would
    download from the Hub and asks for ``pip install kernels``; ``course_utils`` keeps that hint out of the lessons
    (its ``__init__``), and this line says what runs instead.
    """
    if importlib.util.find_spec("bitsandbytes") is None:
        return []  # the bitsandbytes line above already says it is missing
    from course_utils.finetuning import quant  # imports torch and bitsandbytes: only when the report runs

    return [Requirement("4-bit kernel", "INFO", quant.bnb_path(pick_device()))]


def _check_memory() -> list[Requirement]:
    total, available = system_memory()
    out = []
    if total == 0:
        out.append(Requirement("system RAM", "WARN", "could not be measured", "install psutil (`pip install psutil`)"))
    elif available < 2 * GIB:
        out.append(Requirement("system RAM", "WARN", f"{available / GIB:.1f} GiB free of {total / GIB:.1f} GiB",
                               "close other programs: the notebooks need about 2 GiB free"))
    else:
        out.append(Requirement("system RAM", "OK", f"{available / GIB:.1f} GiB free of {total / GIB:.1f} GiB"))
    device = pick_device()
    if device.type != "cpu":
        memory = machine_memory(device)
        out.append(Requirement(f"{device.type} memory", "OK", f"{memory.name}: {memory.total_bytes / GIB:.1f} GiB "
                               f"total, {memory.available_bytes / GIB:.1f} GiB free"))
    return out


def _check_hub() -> list[Requirement]:
    out = []
    if hub.offline_requested():
        out.append(Requirement("Hugging Face Hub", "INFO", "offline mode (HF_HUB_OFFLINE=1): models and data come "
                               "from data/ and the local cache"))
    elif hub.hub_reachable():
        out.append(Requirement("Hugging Face Hub", "OK", "reachable"))
    else:
        out.append(Requirement("Hugging Face Hub", "WARN", "not reachable: the tiny profile will be used",
                               "check the internet connection (or set HF_HUB_OFFLINE=1 to work offline on purpose)",
                               "working-offline"))
    if hub.token_present():
        out.append(Requirement("HF token", "INFO", "present (not shown)"))
    else:
        out.append(Requirement("HF token", "INFO", "absent: only needed for gated models (Llama on the cluster "
                               "profile) and for pushing to the hub; set HF_TOKEN or run `hf auth login`"))
    return out


def _check_unsloth() -> list[Requirement]:
    import torch

    if not torch.cuda.is_available():
        return []
    found = importlib.util.find_spec("unsloth") is not None
    return [Requirement("unsloth (optional)", "INFO",
                        "installed: fine-tuning notebooks will use it" if found else
                        "not installed: fine-tuning uses transformers + peft; `pip install unsloth` for the fast path")]


def _guarded(name: str, check: Callable[[], Iterable[Requirement]]) -> list[Requirement]:
    try:
        return list(check())
    except Exception as exc:  # noqa: BLE001 - the report itself must never crash
        fix = "fix the failing package above first" if isinstance(exc, ImportError) else \
            "rerun; if it persists, report it with this message"
        return [Requirement(name, "FAIL", f"could not be checked ({type(exc).__name__}: {str(exc)[:160]})", fix)]


def environment_report(print_report: bool = True, *, import_packages: bool = False) -> list[Requirement]:
    """Check Python, the course packages, data/, device, memory and the hub; print one line per requirement.

    Packages are found without importing them (fast) unless ``import_packages`` is set or they are already
    imported. Every FAIL carries its fix. This function never raises.
    """
    report: list[Requirement] = []
    report += _guarded("Python", lambda: [_check_python()])
    try:
        minimums = project.minimum_versions()
    except Exception:  # noqa: BLE001
        minimums = {}
    for import_name, dist_name in COURSE_PACKAGES:
        report += _guarded(dist_name, lambda i=import_name, d=dist_name: [
            check_package(i, d, minimums.get(d), import_it=import_packages or i == "torch")])
    report += _guarded("embedded data", _check_embedded)
    report += _guarded("device", _check_device)
    report += _guarded("4-bit kernel", _check_4bit_kernel)
    report += _guarded("memory", _check_memory)
    report += _guarded("hub", _check_hub)
    report += _guarded("Colab", lambda: [Requirement("Colab", "INFO", "yes" if in_colab() else "no")])
    report += _guarded("unsloth", _check_unsloth)
    if print_report:
        print(format_report(report))
    return report


def format_report(report: list[Requirement]) -> str:
    """The report as text, ending with a one-line verdict."""
    failures = [r for r in report if r.status == "FAIL"]
    verdict = ("All requirements met." if not failures else
               f"{len(failures)} requirement(s) failed: apply the fixes above, then rerun this cell.")
    return "\n".join(str(r) for r in report) + "\n" + verdict


if __name__ == "__main__":  # python -m course_utils.course.env
    sys.exit(0 if all(r.ok for r in environment_report()) else 1)
