"""Resolve the constraints Colab's setup cells install with: constraints/colab.txt and constraints/colab-gpu.txt.

Each is what the setup cell's install (the runtime dependencies; the same plus the ``gpu`` extra) resolves to on
Colab's published runtime (constraints/colab-runtime.txt: Python 3.13, Linux x86_64, Colab's versions kept where
they satisfy, as pip keeps an installed package), with the kernel's stack and the torch family pinned to Colab's
as the cell pins them. Written: the ML stack only. Left out: what the cell pins to the installed versions (kernel,
torch family), what Colab imported at start-up (it stays as Colab has it), and what is built for one torch
(triton, xformers, NVIDIA/CUDA wheels). colab-gpu.txt also records Unsloth's torch range (``# unsloth torch:``),
which the setup cell checks before installing the extra. Run it again when pyproject.toml, the Unsloth release or
constraints/colab-runtime.txt changes (it asks PyPI, as of colab_runtime.EXCLUDE_NEWER):

    python scripts/colab_gpu_constraints.py
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from course_utils.course import colab_runtime  # noqa: E402

# Built for one torch each, or part of torch's CUDA runtime: the machine's torch decides these.
TORCH_BOUND = re.compile(r"^(torch|torchvision|torchaudio|triton|xformers|nvidia-.*|cuda-.*)$", re.I)
OUTPUTS = {(): REPO / "constraints" / "colab.txt", ("gpu",): REPO / "constraints" / "colab-gpu.txt"}


def kept(resolved: dict[str, colab_runtime.Resolved], runtime: colab_runtime.ColabRuntime) -> dict[str, str]:
    """The ML stack of a resolution: without the torch-bound packages and those the runtime keeps (marked)."""
    return {name: item.version for name, item in resolved.items()
            if not TORCH_BOUND.match(name) and runtime.role(name) is None}


def unsloth_torch_range(versions: dict[str, str]) -> str:
    """The torch range unsloth and unsloth_zoo require (their unconditional Requires-Dist), from their wheels."""
    specs = []
    with tempfile.TemporaryDirectory() as tmp:
        wanted = [f"{name}=={versions[name]}" for name in ("unsloth", "unsloth-zoo")]
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--index-url", colab_runtime.INDEX, "-d", tmp, *wanted], check=True)
        for wheel in Path(tmp).glob("*.whl"):
            with zipfile.ZipFile(wheel) as archive:
                metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
                for line in archive.read(metadata).decode().splitlines():
                    match = re.match(r"^Requires-Dist: torch\s*([<>=!~][^;]*?)\s*(;.*)?$", line)
                    if match and "extra ==" not in (match.group(2) or ""):
                        specs += [part.strip() for part in match.group(1).split(",")]
    return ",".join(sorted(set(specs)))


def write(path: Path, extras: tuple[str, ...], versions: dict[str, str], runtime: colab_runtime.ColabRuntime,
          torch_range: str | None) -> None:
    install = f"-e '.[{','.join(extras)}]'" if extras else "-e ."
    header = [
        f"# Colab's setup cell installs {install} with these: resolved on Colab's runtime of {runtime.date}",
        f"# (constraints/colab-runtime.txt: Python {runtime.python}, Linux x86_64), PyPI as of "
        f"{colab_runtime.EXCLUDE_NEWER}.",
        "# Regenerate with: python scripts/colab_gpu_constraints.py. The ML stack only: the kernel's stack and",
        "# the torch family are pinned by the cell to what is installed, start-up packages stay as Colab has them.",
    ]
    if torch_range:
        header.append(f"# unsloth torch: {torch_range}")
    lines = [f"{name}=={version}" for name, version in sorted(versions.items())]
    path.write_text("\n".join(header + lines) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(REPO)}: {len(lines)} pins")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    runtime = colab_runtime.load()
    for extras, path in OUTPUTS.items():
        resolved = colab_runtime.resolve(extras, runtime=runtime, pins=colab_runtime.cell_pins(runtime))
        versions = kept(resolved, runtime)
        write(path, extras, versions, runtime, unsloth_torch_range(versions) if "gpu" in extras else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
