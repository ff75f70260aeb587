"""constraints/colab-gpu.txt: the GPU path's resolved versions, consistent with the gpu extra and torch-free."""

from __future__ import annotations

import re

import pytest
from packaging.requirements import Requirement

from course_utils.ground import paths

PINS_FILE = paths.REPO_ROOT / "constraints" / "colab-gpu.txt"


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("colab_gpu_constraints")


def pins() -> dict[str, str]:
    lines = [line for line in PINS_FILE.read_text().splitlines() if line and not line.startswith("#")]
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in (line.split("==") for line in lines)}


def test_the_pins_satisfy_the_gpu_extra_and_leave_torch_alone(script):
    import tomllib

    pinned = pins()
    extra = tomllib.loads((paths.REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    for line in extra:  # unsloth's own caps (transformers, trl, datasets) are in the extra and hold in the file
        requirement = Requirement(line)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert requirement.specifier.contains(pinned[name]), f"{name}=={pinned[name]} breaks {line}"
    for name in pinned:
        assert not script.TORCH_BOUND.match(name), f"{name} belongs to the machine's torch build: do not pin it"
    assert "torch" not in pinned and {"unsloth", "bitsandbytes", "peft", "trl"} <= set(pinned)


def test_only_the_ml_stack_is_written(script):
    from course_utils.course import colab_runtime
    from course_utils.course.colab_runtime import Resolved

    runtime = colab_runtime.load()
    resolved = {name: Resolved("1.0", ()) for name in ("transformers", "ipython", "numpy", "triton", "xformers",
                                                       "nvidia-cublas-cu12", "datasets")}
    assert script.kept(resolved, runtime) == {"transformers": "1.0", "datasets": "1.0"}


def test_the_gpu_file_records_unsloths_torch_range():
    from packaging.specifiers import SpecifierSet

    (line,) = [line for line in PINS_FILE.read_text().splitlines() if line.startswith("# unsloth torch:")]
    torch_range = SpecifierSet(line.split(":", 1)[1].strip())
    assert "2.11.0" in torch_range and "2.15.0" not in torch_range  # unsloth 2026.10.9: torch>=2.4,<2.15
