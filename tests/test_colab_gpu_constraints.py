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


def test_source_only_packages_are_resolved_through_their_dependencies(script):
    wanted, source_only = script.requirements()
    assert source_only == ["rouge-score"]
    assert not any(w.startswith("rouge") for w in wanted)
    assert {"absl-py", "nltk", "six"} <= set(wanted) and "torch>=2.4" in wanted
    assert any(w.startswith("unsloth") for w in wanted)  # the gpu extra
    assert pins()["rouge-score"] == script.ci_version("rouge-score")
