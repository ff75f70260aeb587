"""Profiles: which models, data and budgets a notebook uses on this machine.

A notebook's parameters cell says ``PROFILE = "auto"``. :func:`resolve_profile` turns that into one of

* ``tiny``    - no CUDA GPU or no hub: everything comes from ``data/`` (always the case in CI);
* ``colab``   - a CUDA GPU and the hub: real small models and hub datasets;
* ``cluster`` - only when asked for by name: larger models, several GPUs, hours.

Notebooks ask for models and datasets by *role* (``profile.model("base")``) so the cells never change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from course_utils.ground import hub

T = TypeVar("T")

MODEL_ROLES = ("gpt2", "base", "teacher", "student", "finetune")
DATASET_ROLES = ("stories", "instructions")


@dataclass(frozen=True)
class Profile:
    """A named set of models, datasets and budget scale for one kind of machine."""

    name: str
    description: str
    models: Mapping[str, str]
    datasets: Mapping[str, str]
    reason: str = field(default="", compare=False)

    def model(self, role: str) -> str:
        """The model name (embedded name or hub id) this profile uses for ``role``."""
        return _lookup(self.models, role, "model", self.name)

    def dataset(self, role: str) -> str:
        """The dataset name (embedded name or hub id) this profile uses for ``role``."""
        return _lookup(self.datasets, role, "dataset", self.name)

    def pick(self, **by_profile: T) -> T:
        """Choose a value by profile name: ``profile.pick(tiny=40, colab=300, cluster=2000)``."""
        if self.name in by_profile:
            return by_profile[self.name]
        if self.name == "cluster" and "colab" in by_profile:  # a cluster can always do what Colab does
            return by_profile["colab"]
        raise KeyError(f"No value given for profile {self.name!r}; pass {self.name}=... to pick().")

    @property
    def is_tiny(self) -> bool:
        return self.name == "tiny"

    def __str__(self) -> str:
        return f"Profile {self.name!r}: {self.description}" + (f" ({self.reason})" if self.reason else "")


def _lookup(table: Mapping[str, str], role: str, kind: str, profile: str) -> str:
    try:
        return table[role]
    except KeyError:
        raise KeyError(f"Unknown {kind} role {role!r} in profile {profile!r}; known roles: {sorted(table)}") from None


PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        name="tiny",
        description="embedded tiny checkpoints and data from data/, CPU-sized budgets",
        models={
            "gpt2": "tiny-gpt2",
            "base": "tiny-llama",
            "teacher": "tiny-llama",
            "student": "tiny-llama-student",
            "finetune": "tiny-llama",
        },
        datasets={"stories": "tiny-stories", "instructions": "zorbish"},
    ),
    "colab": Profile(
        name="colab",
        description="real small models from the hub on one CUDA GPU (a free T4 is enough)",
        models={
            "gpt2": "openai-community/gpt2",
            "base": "HuggingFaceTB/SmolLM2-135M",
            "teacher": "HuggingFaceTB/SmolLM2-360M",
            "student": "HuggingFaceTB/SmolLM2-135M",
            "finetune": "Qwen/Qwen2.5-0.5B",
        },
        # The made-up instruction pattern is ours on every profile: no hub model can know it.
        datasets={"stories": "roneneldan/TinyStories", "instructions": "zorbish"},
    ),
    "cluster": Profile(
        name="cluster",
        description="larger models on several GPUs through accelerate/torchrun (Llama 3.2 needs a Hub token)",
        models={
            "gpt2": "openai-community/gpt2-medium",
            "base": "meta-llama/Llama-3.2-1B",
            "teacher": "meta-llama/Llama-3.2-3B",
            "student": "meta-llama/Llama-3.2-1B",
            "finetune": "meta-llama/Llama-3.2-1B",
        },
        datasets={"stories": "roneneldan/TinyStories", "instructions": "zorbish"},
    ),
}


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def resolve_profile(name: str = "auto", *, verbose: bool = True) -> Profile:
    """Turn ``"auto"`` or a profile name into a :class:`Profile`, saying why it was chosen."""
    if not isinstance(name, str):
        raise TypeError(f"PROFILE must be a string such as 'auto' or 'tiny', got {name!r}")
    key = name.strip().lower()
    if key == "auto":
        cuda, online = _cuda_available(), hub.hub_reachable()
        if cuda and online:
            key, reason = "colab", "auto: a CUDA GPU and the Hugging Face Hub are both available"
        else:
            missing = [what for what, ok in (("no CUDA GPU", cuda), ("the hub is not reachable", online)) if not ok]
            key, reason = "tiny", "auto: " + " and ".join(missing)
    elif key in PROFILES:
        reason = "asked for by name"
    else:
        raise ValueError(
            f"Unknown profile {name!r}. Choose one of 'auto', " + ", ".join(repr(p) for p in PROFILES)
            + " in the notebook's parameters cell (PROFILE = ...)."
        )
    profile = _with_reason(PROFILES[key], reason)
    if verbose:
        print(profile)
    return profile


def _with_reason(profile: Profile, reason: str) -> Profile:
    return Profile(profile.name, profile.description, profile.models, profile.datasets, reason)


def embedded_alternative(role_or_name: str) -> str | None:
    """The tiny profile's stand-in for a role, or for a hub name some profile uses."""
    tiny = PROFILES["tiny"]
    if role_or_name in tiny.models:
        return tiny.models[role_or_name]
    if role_or_name in tiny.datasets:
        return tiny.datasets[role_or_name]
    for profile in PROFILES.values():
        for table, tiny_table in ((profile.models, tiny.models), (profile.datasets, tiny.datasets)):
            for role, value in table.items():
                if value == role_or_name:
                    return tiny_table[role]
    return None


def describe(profile: Profile) -> dict[str, Any]:
    """A plain dict of a profile, for tables and reports."""
    return {"profile": profile.name, **{f"model:{k}": v for k, v in profile.models.items()},
            **{f"dataset:{k}": v for k, v in profile.datasets.items()}}
