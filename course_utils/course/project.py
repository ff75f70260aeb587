"""The workbook's own project metadata: its dependency lists and settings, read from pyproject.toml.

``pyproject.toml`` is the one place where dependencies are written down. Read with ``tomllib`` and parsed with
``packaging``; where the repository is not beside the package (an installed wheel), the installed distribution's
metadata says the same.
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

from course_utils.ground import paths

DISTRIBUTION = "llm-workbook"
PYPROJECT = paths.REPO_ROOT / "pyproject.toml"
# Extras that environment.yml installs for conda users (a laptop or a cluster: tests and JupyterLab included).
CONDA_EXTRAS = ("dev", "lab")


@cache
def _pyproject(path: Path = PYPROJECT) -> dict[str, Any] | None:
    if not path.exists():
        return None
    with path.open("rb") as f:
        return tomllib.load(f)


def pyproject(path: Path | None = None) -> dict[str, Any]:
    """The parsed ``pyproject.toml`` of the workbook (raises FileNotFoundError with a fix if it is missing)."""
    data = _pyproject(path or PYPROJECT)
    if data is None:
        raise FileNotFoundError(f"{path or PYPROJECT} not found: this command needs the workbook's repository "
                                "(git clone it), not only the installed package.")
    return data


def tool_settings(path: Path | None = None) -> dict[str, Any]:
    """The ``[tool.course_utils]`` table."""
    return dict(pyproject(path).get("tool", {}).get("course_utils", {}))


def requirements(extra: str | None = None) -> list[Requirement]:
    """The runtime dependencies (``extra=None``) or one extra's, from pyproject.toml or the installed metadata."""
    data = _pyproject(PYPROJECT)
    if data is not None:
        project = data["project"]
        lines = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
        return [Requirement(line) for line in lines]
    installed = [Requirement(line) for line in metadata.requires(DISTRIBUTION) or []]
    if extra is None:
        return [r for r in installed if r.marker is None or r.marker.evaluate({"extra": ""})]
    # A requirement belongs to an extra when its marker mentions it and holds for it.
    return [r for r in installed if r.marker is not None and f'"{extra}"' in str(r.marker)
            and r.marker.evaluate({"extra": extra})]


def extras() -> list[str]:
    """The names of the optional dependency groups."""
    data = _pyproject(PYPROJECT)
    if data is not None:
        return list(data["project"].get("optional-dependencies", {}))
    return list(metadata.metadata(DISTRIBUTION).get_all("Provides-Extra") or [])


def minimum_versions() -> dict[str, str]:
    """``{"torch": "2.4", ...}``: the ``>=`` bound of each runtime dependency that has one."""
    found = {}
    for requirement in requirements():
        for specifier in requirement.specifier:
            if specifier.operator == ">=":
                found[requirement.name.lower().replace("_", "-")] = specifier.version
    return found


def requires_python() -> str:
    """The ``requires-python`` specifier, e.g. ``>=3.11``."""
    return str(pyproject()["project"]["requires-python"])


def environment_yml() -> str:
    """environment.yml as generated from pyproject.toml: conda supplies Python and the tools, pip the same lists."""
    minimum = requires_python().removeprefix(">=")
    packages = [str(r) for r in requirements()]
    for extra in CONDA_EXTRAS:
        packages += [str(r) for r in requirements(extra) if str(r) not in packages]
    lines = [
        "# Generated from pyproject.toml by `python -m course_utils environment-yml`; a test checks that it is current.",
        "# Conda environment for a laptop or a cluster: `conda env create -f environment.yml && conda activate "
        "llm-workbook`.",
        "# Conda supplies Python and the tools; pip installs the same dependency lists as pyproject.toml "
        f"(runtime + {', '.join(CONDA_EXTRAS)}).",
        "# On Linux, pip's default torch is a CUDA build (right for a GPU cluster). On a CPU-only machine, install the",
        "# CPU build first: pip install --index-url https://download.pytorch.org/whl/cpu torch",
        "# Add Unsloth only on a GPU machine: pip install -e '.[gpu]'",
        "name: llm-workbook",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        f"  - python={minimum}",
        "  - pip",
        "  - git",
        "  - make",
        "  - pip:",
        *[f"      - {p}" for p in packages],
        "      - -e .",
        "",
    ]
    return "\n".join(lines)
