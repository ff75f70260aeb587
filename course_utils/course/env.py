"""The environment report: Python, the course packages, data/, device, memory and the Hub, one [OK]/[FAIL] line each.

torch is imported inside the functions, never at module level, so that :func:`environment_report` still works
(and says how to fix it) on a machine where torch is missing or broken. The device, precision and memory it reports
are chosen by :mod:`course_utils.ground.machine`, which the lessons call themselves.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import platform
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from course_utils.course import project
from course_utils.ground import hub, profiles, sources
from course_utils.ground.machine import (
    GIB,
    in_colab,
    machine_memory,
    pick_device,
    pick_precision,
    system_memory,
)

MIN_PYTHON = (3, 11)  # pyproject.toml's requires-python (a test keeps the two equal)

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
    if available < 2 * GIB:
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
