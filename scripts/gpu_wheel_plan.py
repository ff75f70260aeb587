"""Which wheels a GPU machine without network needs, in batches that each travel in one call (scripts/gpu_wheels.sh).

    python scripts/gpu_wheel_plan.py pins                         # the pins to download (what gpu_wheels.sh fetches)
    python scripts/gpu_wheel_plan.py plan WHEELS [--out DIR] [--dry-run] [--limit-mb 40] [--installed FREEZE]

A lent GPU machine carries at most 64 MiB per call, the working tree included, and has its own CUDA torch and a
set of packages already (``scripts/gpu_image_packages.txt``, or the machine's own ``pip list --format=freeze``
given with ``--installed``). The plan walks the requirements of the workbook, its ``gpu`` extra and the notebook
runner (papermill, ipykernel) through the downloaded wheels' metadata, leaves out what the machine has and the
torch family and what the check never imports, trims bitsandbytes to the CUDA libraries of the machine's
torch and unsloth to its library (no web app), and packs the rest into batches of
at most ``--limit-mb`` megabytes. A batch over the limit is refused (exit status 1), in a dry run too.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU_PINS = ROOT / "constraints" / "colab-gpu.txt"
CI_PINS = ROOT / "constraints" / "ci-cpu.txt"
IMAGE_PACKAGES = Path(__file__).with_name("gpu_image_packages.txt")
CALL_LIMIT = 64 * 2**20  # bytes one call may carry, working tree and wheels together
# The machine's torch brings these; a wheel of them would replace its CUDA build.
TORCH_FAMILY = re.compile(r"^(torch|torchvision|torchaudio|triton|xformers|nvidia-.*|cuda-.*)$")
# What papermill needs to execute a notebook beside the workbook's own requirements.
RUNNER_ROOTS = ("papermill", "ipykernel")
# The target platform: the GPU image's Python (3.12, KINDS.md) on Linux x86-64.
MARKER_ENVIRONMENT = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
                      "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
                      "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
# Files a wheel ships that the GPU check never loads, left out of its copy (name: (what is dropped, the files)).
# bitsandbytes has one library per CUDA release (about 20 MB each) and the machine's torch is a CUDA 13 build;
# unsloth's wheel holds its web app, Unsloth Studio (about 25 MB), which `import unsloth` does not import.
TRIMS: dict[str, tuple[str, re.Pattern[str]]] = {
    "bitsandbytes": ("libraries for other than the CPU and CUDA 13",
                     re.compile(r"libbitsandbytes_(?!(cpu|cuda13\d)\.so$).*\.so$")),
    "unsloth": ("Unsloth Studio, its web app (studio/)", re.compile(r"^studio/")),
}
# Required by a package the check uses, yet never imported by what the check runs (name: why).
NOT_NEEDED = {
    "widgetsnbextension": "the browser half of ipywidgets: no front end runs there",
    "jupyterlab-widgets": "the browser half of ipywidgets: no front end runs there",
    "debugpy": "ipykernel's debugger, optional to it: nobody attaches there",
    "hf-transfer": "Hub downloads with HF_HUB_ENABLE_HF_TRANSFER: there is no network there",
}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    """``{normalized name: "Name==version"}`` of a constraints file."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            pins[normalize(line.split("==", 1)[0])] = line
    return pins


def read_installed(path: Path) -> set[str]:
    """Normalized names of a package list: one name (or ``name==version``) a line, ``#`` comments."""
    return {normalize(re.split(r"[=<>@ ]", line.strip(), maxsplit=1)[0]) for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")}


def _requirements(requires: list[str]) -> list[str]:
    """Names required by Requires-Dist entries, markers evaluated for the target (extras left out)."""
    from packaging.requirements import Requirement

    names = []
    for text in requires:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate(MARKER_ENVIRONMENT):
            names.append(normalize(requirement.name))
    return names


def root_requirements() -> list[str]:
    """The workbook's requirements, its ``gpu`` extra and the notebook runner's."""
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["gpu"], *RUNNER_ROOTS]
    return sorted({normalize(Requirement(text).name) for text in wanted})


def download_pins() -> list[str]:
    """What gpu_wheels.sh downloads: every pin of colab-gpu.txt, and the runner's packages at CI's versions (the
    GPU pins need not hold them)."""
    import importlib.metadata

    gpu, ci = read_pins(GPU_PINS), read_pins(CI_PINS)
    pins, todo, seen = dict(gpu), list(RUNNER_ROOTS), set()
    while todo:  # the runner's closure, read from this environment's installed metadata
        name = normalize(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        if name not in pins and name in ci:
            pins[name] = ci[name]
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            todo += _requirements(importlib.metadata.requires(name) or [])
    return [pin for name, pin in sorted(pins.items()) if not TORCH_FAMILY.match(name)]


@dataclass
class Wheel:
    path: Path
    name: str
    size: int
    requires: list[str]


def read_wheels(folder: Path) -> dict[str, Wheel]:
    wheels = {}
    for path in sorted(folder.glob("*.whl")):
        with zipfile.ZipFile(path) as archive:
            metadata = next((archive.read(n).decode() for n in archive.namelist()
                             if n.endswith(".dist-info/METADATA")), "")
        name = normalize(path.name.split("-", 1)[0])
        requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines()
                    if line.startswith("Requires-Dist:")]
        wheels[name] = Wheel(path, name, path.stat().st_size, _requirements(requires))
    return wheels


def trim_wheel(wheel: Path, drop: re.Pattern[str], out_dir: Path) -> Path:
    """A copy of ``wheel`` without the files whose names match ``drop`` (its RECORD rewritten to match)."""
    out = out_dir / wheel.name
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        dropped = {n for n in source.namelist() if drop.search(n)}
        for item in source.infolist():
            if item.filename in dropped:
                continue
            data = source.read(item.filename)
            if item.filename.endswith(".dist-info/RECORD"):
                data = "".join(line for line in data.decode().splitlines(keepends=True)
                               if line.split(",", 1)[0] not in dropped).encode()
            target.writestr(item, data)
    return out


@dataclass
class Plan:
    batches: list[list[Wheel]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # name: why
    missing: list[str] = field(default_factory=list)  # needed, but no wheel was downloaded
    trimmed: dict[str, tuple[int, int]] = field(default_factory=dict)  # name: (bytes before, after)

    def sizes(self) -> list[int]:
        return [sum(w.size for w in batch) for batch in self.batches]

    def calls(self, tree: int) -> list[list[int]]:
        """Batch numbers grouped into calls: as many batches per call as fit beside the working tree."""
        calls: list[list[int]] = []
        room = 0
        for number, size in enumerate(self.sizes(), 1):
            if calls and size <= room:
                calls[-1].append(number)
                room -= size
            else:
                calls.append([number])
                room = CALL_LIMIT - tree - size
        return calls


def make_plan(wheels: dict[str, Wheel], limit: int, have: set[str], scratch: Path) -> Plan:
    """Walk the requirements from the workbook's roots through ``wheels``; pack what is needed into batches."""
    plan, needed, todo = Plan(), {}, root_requirements()
    while todo:
        name = todo.pop()
        if name in needed or name in plan.skipped:
            continue
        if TORCH_FAMILY.match(name):
            plan.skipped[name] = "the machine's torch brings it"
        elif name in NOT_NEEDED:
            plan.skipped[name] = NOT_NEEDED[name]
        elif name in have:
            plan.skipped[name] = "the GPU image has it (its version is checked at run time)"
        elif name not in wheels:
            plan.missing.append(name)
            plan.skipped[name] = "needed, but no wheel was downloaded"
        else:
            needed[name] = wheels[name]
            todo += wheels[name].requires
    for name in sorted(set(wheels) - set(needed) - set(plan.skipped)):
        plan.skipped[name] = "downloaded, but nothing the GPU check runs requires it"
    for name, (_, drop) in TRIMS.items():
        if name in needed:
            small = trim_wheel(needed[name].path, drop, scratch)
            plan.trimmed[name] = (needed[name].size, small.stat().st_size)
            needed[name] = Wheel(small, name, small.stat().st_size, needed[name].requires)
    sizes: list[int] = []
    for wheel in sorted(needed.values(), key=lambda w: -w.size):  # largest first, into the first batch with room
        slot = next((i for i, used in enumerate(sizes) if used + wheel.size <= limit), None)
        if slot is None:
            plan.batches.append([])
            sizes.append(0)
            slot = len(sizes) - 1
        plan.batches[slot].append(wheel)
        sizes[slot] += wheel.size
    return plan


def working_tree_bytes() -> int:
    """Bytes of what a call sends besides carried paths: tracked and untracked, not ignored files."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    return sum((ROOT / name).stat().st_size for name in listed if name and (ROOT / name).is_file())


def _shown(path: Path) -> str:
    return str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)


def report(plan: Plan, limit: int, tree: int, out: Path) -> list[str]:
    """The plan in words: each batch and its size beside the call's limit, then what is left out and why."""
    mb = 1e6
    lines = [f"Wheel plan: {len(plan.batches)} batch(es) of at most {limit / mb:.0f} MB; the working tree is "
             f"{tree / mb:.1f} MB and one call carries at most {CALL_LIMIT / 2**20:.0f} MiB."]
    for i, (batch, size) in enumerate(zip(plan.batches, plan.sizes()), 1):
        verdict = "OVER THE LIMIT" if size > limit else (
            "over the call's limit with the tree" if size + tree > CALL_LIMIT else "fits one call")
        lines.append(f"  {_shown(out)}/batch-{i:02d}: {len(batch)} wheels, {size / mb:.1f} MB ({verdict}): "
                     + ", ".join(f"{w.path.name.split('-')[0]} {w.size / mb:.1f}" for w in batch))
    for name, (before, after) in plan.trimmed.items():
        lines.append(f"  trimmed {name}: {before / mb:.1f} MB -> {after / mb:.1f} MB (without {TRIMS[name][0]})")
    calls = plan.calls(tree)
    lines.append(f"  calls needed: {len(calls)} (" + "; ".join(
        "batches " + ", ".join(f"{n:02d}" for n in call) + f": {(tree + sum(plan.sizes()[n - 1] for n in call)) / mb:.1f}"
        " MB with the tree" for call in calls) + ")")
    reasons: dict[str, list[str]] = {}
    for name, why in sorted(plan.skipped.items()):
        reasons.setdefault(why, []).append(name)
    for why, names in reasons.items():
        lines.append(f"  skipped ({why}): {', '.join(names)}")
    return lines


def example_wheel(folder: Path, name: str, *, requires: tuple[str, ...] = (), payload: int = 0,
                  extra_files: dict[str, int] | None = None) -> Path:
    """A small valid pure-Python wheel of ``name`` 1.0 (for the smoke run and the tests): ``payload`` bytes of
    incompressible data in its package, and ``extra_files`` (path: bytes) beside it."""
    import base64
    import hashlib
    import os

    info = f"{name}-1.0.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    files = {f"{name}/__init__.py": b"VALUE = 1\n", f"{info}/METADATA": metadata.encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    if payload:
        files[f"{name}/payload.bin"] = os.urandom(payload)
    files.update({path: os.urandom(size) for path, size in (extra_files or {}).items()})
    record = "".join(f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
                     f"{len(data)}\n" for path, data in files.items()) + f"{info}/RECORD,,\n"
    files[f"{info}/RECORD"] = record.encode()
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def plan_command(args: argparse.Namespace) -> int:
    limit = int(args.limit_mb * 1e6)
    have = read_installed(args.installed or IMAGE_PACKAGES)
    with tempfile.TemporaryDirectory() as scratch:
        plan = make_plan(read_wheels(args.wheels), limit, have, Path(scratch))
        over = [i for i, size in enumerate(plan.sizes(), 1) if size > limit]
        print("\n".join(report(plan, limit, working_tree_bytes(), args.out)))
        if over:
            print(f"REFUSED: batch {', '.join(map(str, over))} is over {args.limit_mb:g} MB (a single wheel larger "
                  "than the limit): nothing written.", file=sys.stderr)
            return 1
        if args.dry_run:
            print("Dry run: no batch folder written.")
            return 0
        for old in args.out.glob("batch-*"):
            shutil.rmtree(old)
        for i, batch in enumerate(plan.batches, 1):
            folder = args.out / f"batch-{i:02d}"
            folder.mkdir(parents=True)
            for wheel in batch:
                shutil.copy2(wheel.path, folder / wheel.path.name)
        calls = plan.calls(working_tree_bytes())
    print(f"Wrote {_shown(args.out)}: carry " + ("it whole in one call" if len(calls) == 1 else
          "; ".join(f"call {i}: " + ", ".join(f"batch-{n:02d}" for n in call) for i, call in enumerate(calls, 1)))
          + " and install with scripts/gpu_check.py --wheels (README, 'The colab profile and the GPU').")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("pins", help="print the pins gpu_wheels.sh downloads")
    plan = commands.add_parser("plan", help="batches of the needed wheels of a folder")
    plan.add_argument("wheels", type=Path, help="the folder the wheels were downloaded into")
    plan.add_argument("--out", type=Path, default=ROOT / "build" / "gpu" / "wheels")
    plan.add_argument("--limit-mb", type=float, default=40.0)
    plan.add_argument("--installed", type=Path, help="the GPU machine's package list (pip list --format=freeze)")
    plan.add_argument("--dry-run", action="store_true", help="print the plan only")
    args = parser.parse_args(argv)
    if args.command == "pins":
        print("\n".join(download_pins()))
        return 0
    return plan_command(args)


if __name__ == "__main__":
    sys.exit(main())
