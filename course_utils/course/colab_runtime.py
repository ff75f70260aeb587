"""Colab's GPU runtime as data (constraints/colab-runtime.txt), and what a setup cell's install would do to it.

Colab publishes the packages its runtimes hold in the ``googlecolab/backend-info`` repository
(``pip-freeze.gpu.txt``, ``os-info-gpu.txt``). :func:`refresh` keeps from a checkout of it only the facts the
tests need: Python's version, the source commit and its date, and ``name==version`` of the packages the workbook
shares with Colab, each of the kernel's own stack marked ``# kernel``, the torch family ``# torch`` and what Colab
has imported before the first cell runs ``# startup``. :func:`resolve` asks ``uv pip compile`` what a setup cell's
install gives on that runtime (Python 3.13 markers, Linux x86_64, Colab's versions preferred, as pip keeps an
installed package that already satisfies), and :func:`replacements` lists each marked package it would replace.

    python -m course_utils colab-runtime PATH/TO/backend-info     # rewrite constraints/colab-runtime.txt
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from course_utils.ground import paths

RUNTIME_FILE = paths.REPO_ROOT / "constraints" / "colab-runtime.txt"
SOURCE_REPO = "https://github.com/googlecolab/backend-info"
# The running kernel's own packages: replacing one under a live kernel breaks it, and google-colab pins them.
KERNEL = ("ipython", "ipykernel", "traitlets", "tornado", "jupyter-client", "jupyter-core", "pyzmq", "comm",
          "debugpy", "matplotlib-inline")
# Colab's CUDA torch and what is built for it: the setup cell pins these to the installed versions.
TORCH = ("torch", "torchvision", "torchaudio", "triton")
# Imported before the first cell runs (google.colab's formatters and widget support import them): an upgrade
# takes effect only after a restart.
STARTUP = ("numpy", "pandas", "ipywidgets", "requests", "six")
ROLES = {**{name: "kernel" for name in KERNEL}, **{name: "torch" for name in TORCH},
         **{name: "startup" for name in STARTUP}}
# A registry's answer fixed in time, so that CI gives the same verdict tomorrow (uv's --exclude-newer).
EXCLUDE_NEWER = "2026-12-01T00:00:00Z"
PLATFORM = "x86_64-unknown-linux-gnu"
INDEX = "https://pypi.org/simple"


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares it (``Jupyter_Client`` -> ``jupyter-client``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class ColabRuntime:
    """Colab's published GPU runtime: its Python, the source it came from, and the packages the workbook shares."""

    python: str
    commit: str
    date: str
    packages: dict[str, str] = field(default_factory=dict)  # canonical name -> version (no local +cu128)

    @property
    def python_minor(self) -> str:
        """``3.13`` for ``3.13.15``."""
        return ".".join(self.python.split(".")[:2])

    def role(self, name: str) -> str | None:
        """``kernel``, ``torch``, ``startup`` or None for a package the install may change freely."""
        return ROLES.get(canonical(name))


def load(path: Path = RUNTIME_FILE) -> ColabRuntime:
    """Read constraints/colab-runtime.txt (``# key: value`` header lines, then ``name==version`` lines)."""
    header: dict[str, str] = {}
    packages: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if match := re.match(r"^#\s*(python|commit|date):\s*(\S+)", line):
            header[match.group(1)] = match.group(2)
        elif line and not line.startswith("#"):
            name, version = line.split("#")[0].strip().split("==")
            packages[canonical(name)] = version.strip()
    return ColabRuntime(header["python"], header["commit"], header["date"], packages)


def workbook_names() -> set[str]:
    """What the workbook installs anywhere: CI's pins and the GPU path's (the names it can share with Colab)."""
    names = set()
    for file in ("ci-cpu.txt", "colab-gpu.txt", "colab.txt"):
        path = paths.REPO_ROOT / "constraints" / file
        if path.exists():
            names |= {canonical(line.split("==")[0]) for line in path.read_text().splitlines()
                      if "==" in line and not line.startswith("#")}
    return names


def parse_freeze(text: str) -> dict[str, str]:
    """``pip freeze`` lines to {canonical name: version}; direct references (``@ file://``) are left out."""
    found = {}
    for line in text.splitlines():
        if match := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;+]+)", line.strip()):
            found[canonical(match.group(1))] = match.group(2)
    return found


def refresh(checkout: Path, out: Path = RUNTIME_FILE) -> ColabRuntime:
    """Rewrite ``out`` from a checkout (or bare git dir) of googlecolab/backend-info at its HEAD."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(checkout), *args], check=True, capture_output=True,
                              text=True).stdout

    freeze = parse_freeze(git("show", "HEAD:pip-freeze.gpu.txt"))
    python = re.search(r"^Python (\S+)", git("show", "HEAD:os-info-gpu.txt"), re.M).group(1)
    commit, date = git("log", "-1", "--format=%H %cs", "HEAD").split()
    kept = {name: version for name, version in freeze.items() if name in workbook_names() | set(ROLES)}
    lines = [
        "# Colab's GPU runtime, as Colab publishes it (pip-freeze.gpu.txt, os-info-gpu.txt): only the packages the",
        "# workbook shares with it. # kernel: the kernel's own stack; # torch: Colab's CUDA torch (setup cell pins",
        "# both); # startup: imported before the first cell runs (an upgrade needs a restart).",
        "# Refresh: python -m course_utils colab-runtime PATH/TO/backend-info  (a clone of the source below)",
        f"# source: {SOURCE_REPO}",
        f"# commit: {commit}",
        f"# date: {date}",
        f"# python: {python}",
    ]
    for name in sorted(kept):
        role = ROLES.get(name)
        lines.append(f"{name}=={kept[name]}" + (f"  # {role}" if role else ""))
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load(out)


README_MARKERS = ("<!-- colab-runtime: written by python -m course_utils colab-runtime -->", "<!-- /colab-runtime -->")
README_PACKAGES = ("torch", "ipython", "ipykernel", "traitlets", "tornado", "jupyter-client", "pyzmq", "ipywidgets",
                   "numpy", "pandas", "pyarrow", "transformers", "peft", "datasets", "accelerate")


def readme_block(runtime: ColabRuntime) -> str:
    """README's paragraph on Colab's runtime, from the data file (so the versions are never typed twice)."""
    versions = ", ".join(f"{name} {runtime.packages[name]}" for name in README_PACKAGES if name in runtime.packages)
    return (f"{README_MARKERS[0]}\nColab's GPU runtime as Colab published it on {runtime.date} "
            f"([googlecolab/backend-info]({SOURCE_REPO}) at `{runtime.commit[:12]}`, kept in "
            f"`constraints/colab-runtime.txt`): **Python {runtime.python}**, {versions}.\n{README_MARKERS[1]}")


def update_readme(runtime: ColabRuntime, readme: Path = paths.REPO_ROOT / "README.md") -> None:
    """Rewrite README's block between :data:`README_MARKERS` from ``runtime``."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.index(README_MARKERS[0]), text.index(README_MARKERS[1]) + len(README_MARKERS[1])
    readme.write_text(text[:start] + readme_block(runtime) + text[end:], encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------------
# What an install resolves to on that runtime


class ResolutionError(RuntimeError):
    """uv found no set of versions for the install (its explanation is the message)."""


@dataclass(frozen=True)
class Resolved:
    """One package of a resolution: its version and the requirements that pull it (uv's ``# via`` lines)."""

    version: str
    via: tuple[str, ...]


@dataclass(frozen=True)
class Replacement:
    """A package of Colab's that the install would replace."""

    name: str
    role: str
    colab: str
    new: str
    via: tuple[str, ...]

    def __str__(self) -> str:
        return (f"{self.name} ({self.role}) {self.colab} -> {self.new}, pulled by "
                f"{', '.join(self.via) or 'a constraint'}")


def uv_command() -> list[str]:
    """uv from the dev extra (``uv`` next to this Python), else from PATH."""
    beside = Path(sys.executable).with_name("uv")
    found = str(beside) if beside.exists() else shutil.which("uv")
    if found is None:
        raise FileNotFoundError("uv is not installed: pip install -e '.[dev]' brings it.")
    return [found]


def resolve(extras: Iterable[str] = (), *, runtime: ColabRuntime, constraints: Iterable[Path] = (),
            pins: Mapping[str, str] | None = None, project: Path = paths.REPO_ROOT) -> dict[str, Resolved]:
    """What ``pip install -c ... -e project[extras]`` gives on Colab's runtime, by ``uv pip compile``.

    ``pins`` are constraints as the setup cell writes them (Colab's installed torch and kernel); Colab's
    versions are uv's preferences (a lock file it starts from), so a package Colab holds stays unless a
    requirement needs another version, as pip does with an installed package.
    """
    with tempfile.TemporaryDirectory(prefix="colab_resolve_") as tmp:
        preferences, pin_file = Path(tmp, "resolved.txt"), Path(tmp, "pins.txt")
        preferences.write_text("".join(f"{n}=={v}\n" for n, v in runtime.packages.items()))
        pin_file.write_text("".join(f"{n}=={v}\n" for n, v in (pins or {}).items()))
        command = [*uv_command(), "pip", "compile", str(project / "pyproject.toml"), "--quiet",
                   *[arg for extra in extras for arg in ("--extra", extra)],
                   "--python-version", runtime.python_minor, "--python-platform", PLATFORM,
                   "--exclude-newer", EXCLUDE_NEWER, "--index-url", INDEX, "--no-header",
                   "--annotation-style", "line", "-c", str(pin_file),
                   *[arg for path in constraints for arg in ("-c", str(path))], "-o", str(preferences)]
        env = {"UV_PYTHON_DOWNLOADS": "never", "UV_NO_CONFIG": "1"}
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, check=False)
        if done.returncode != 0:
            raise ResolutionError(done.stderr.strip())
        return parse_compiled(preferences.read_text(), project.name)


def parse_compiled(text: str, project_name: str = "") -> dict[str, Resolved]:
    """uv's ``--annotation-style line`` output to {name: Resolved}; the project itself is left out."""
    found = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)(?:\s+#\s*via\s+(.*))?$", line.strip())
        if match:
            via = tuple(part.strip() for part in (match.group(3) or "").split(",") if part.strip())
            found[canonical(match.group(1))] = Resolved(match.group(2), via)
    return found


def replacements(resolved: Mapping[str, Resolved], runtime: ColabRuntime) -> list[Replacement]:
    """Each kernel, torch or start-up package of Colab's that ``resolved`` gives another version."""
    found = []
    for name, item in sorted(resolved.items()):
        role, colab = runtime.role(name), runtime.packages.get(name)
        if role and colab and item.version.split("+")[0] != colab:
            found.append(Replacement(name, role, colab, item.version, item.via))
    return found


def constraint_replacements(constraints: Path, runtime: ColabRuntime) -> list[Replacement]:
    """Each kernel, torch or start-up package that a constraints file pins to another version than Colab's."""
    pinned = {canonical(n): Resolved(v, (constraints.name,)) for n, v in
              (line.split("#")[0].strip().split("==") for line in constraints.read_text().splitlines()
               if "==" in line and not line.startswith("#"))}
    return replacements(pinned, runtime)


def cell_pins(runtime: ColabRuntime) -> dict[str, str]:
    """What the setup cell pins on that runtime: the kernel's stack and torch family at Colab's versions."""
    return {name: version for name, version in runtime.packages.items() if runtime.role(name) in {"kernel", "torch"}}
