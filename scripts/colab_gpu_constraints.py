"""Resolve constraints/colab-gpu.txt: the versions the GPU path (Colab, CPython 3.12, the ``gpu`` extra) installs.

Unsloth caps transformers, TRL and datasets below what CI pins (constraints/ci-cpu.txt), so on Colab pip quietly
installs older versions of them. This script asks pip, against PyPI, what ``llm-workbook[gpu]`` resolves to for
CPython 3.12 on manylinux x86_64 (wheels only, as on a GPU machine that has no compiler), and writes every version
except those that belong to the machine's torch build: torch, torchvision, torchaudio, triton, xformers and the
NVIDIA/CUDA wheels are left to the torch already installed (Colab's), so that installing with ``-c`` never replaces
it. Run it again when pyproject.toml or the Unsloth release changes:

    python scripts/colab_gpu_constraints.py [--torch 2.13.0] [--out constraints/colab-gpu.txt]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = "3.12"
# manylinux tags a Colab runtime (Ubuntu 22.04, glibc 2.35) accepts, newest first.
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(35, 16, -1)] + ["manylinux2014_x86_64"]
# Built for one torch each, or part of torch's CUDA runtime: the machine's torch decides these.
TORCH_BOUND = re.compile(r"^(torch|torchvision|torchaudio|triton|xformers|nvidia-.*|cuda-.*)$", re.I)
# Published as source only: pip cannot resolve them for another Python without building them, so their
# dependencies are resolved instead and their version is taken from CI's constraints.
SOURCE_ONLY = {"rouge-score": ["absl-py", "nltk", "numpy", "six"]}


def requirements() -> tuple[list[str], list[str]]:
    """(what pip resolves, source-only packages) for the runtime dependencies plus the ``gpu`` extra."""
    from course_utils.course import project

    resolved, source_only = [], []
    for requirement in [*project.requirements(), *project.requirements("gpu")]:
        name = requirement.name.lower().replace("_", "-")
        if name in SOURCE_ONLY:
            source_only.append(name)
            resolved += SOURCE_ONLY[name]
        else:
            resolved.append(str(requirement))
    return resolved, source_only


def resolve(wanted: list[str], torch_version: str) -> dict[str, str]:
    """{name: version} that ``pip install --dry-run`` picks for CPython 3.12 manylinux, torch held at ``torch_version``."""
    with tempfile.TemporaryDirectory() as tmp:
        req, pin, report = Path(tmp, "req.txt"), Path(tmp, "torch.txt"), Path(tmp, "report.json")
        req.write_text("\n".join(wanted) + "\n")
        pin.write_text(f"torch=={torch_version}\n")
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                   "--report", str(report), "--python-version", PYTHON, "--only-binary=:all:",
                   *[arg for platform in PLATFORMS for arg in ("--platform", platform)], "-r", str(req), "-c", str(pin)]
        subprocess.run(command, check=True)
        installed = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"]: item["metadata"]["version"] for item in installed}


def ci_version(name: str) -> str:
    """The version constraints/ci-cpu.txt pins for ``name``."""
    for line in (REPO / "constraints" / "ci-cpu.txt").read_text().splitlines():
        if re.split(r"==", line)[0].strip().lower().replace("_", "-") == name:
            return line.split("==")[1].strip()
    raise KeyError(f"{name} is not pinned in constraints/ci-cpu.txt")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch", default=ci_version("torch"),
                        help="the torch the resolution assumes (default: CI's); it is not written to the file")
    parser.add_argument("--out", type=Path, default=REPO / "constraints" / "colab-gpu.txt")
    args = parser.parse_args(argv)
    wanted, source_only = requirements()
    versions = resolve(wanted, args.torch)
    versions.update({name: ci_version(name) for name in source_only})
    kept = {name: version for name, version in versions.items() if not TORCH_BOUND.match(name)}
    left_out = sorted(name for name in versions if TORCH_BOUND.match(name))
    header = [
        "# The GPU path's versions: llm-workbook[gpu] (Unsloth) resolved for CPython 3.12 on manylinux x86_64.",
        "# Regenerate with: python scripts/colab_gpu_constraints.py",
        f"# Resolved with torch=={args.torch}, which is NOT pinned here: install with Colab's own torch kept, e.g.",
        "#   pip install -c constraints/colab-gpu.txt -e '.[gpu]'   (torch, torchvision, torchaudio pinned to Colab's)",
        f"# Left to the installed torch build: {', '.join(left_out)}.",
        f"# Source-only, version from constraints/ci-cpu.txt: {', '.join(source_only) or 'none'}.",
    ]
    lines = [f"{name}=={version}" for name, version in sorted(kept.items(), key=lambda item: item[0].lower())]
    args.out.write_text("\n".join(header + lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out.relative_to(REPO)}: {len(lines)} pins; left out: {', '.join(left_out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
