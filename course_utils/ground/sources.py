"""Resolve a model or dataset name to something loadable: an embedded folder in data/, the hub, or the cache.

Names are either embedded names (``tiny-llama``, ``tiny-stories``), local folders, or hub ids
(``HuggingFaceTB/SmolLM2-135M``). When nothing usable is found the error names both the hub id and the
embedded alternative, and says how to get either.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Literal

from course_utils.ground import hub, paths, profiles

Origin = Literal["embedded", "local", "cache", "hub"]


class SourceNotFoundError(LookupError):
    """Neither the hub nor an embedded or local copy of a model or dataset can be used."""


@dataclass(frozen=True)
class Source:
    """Where a model or dataset will be loaded from."""

    name: str
    location: str  # a folder path or a hub id: what from_pretrained / load_dataset receives
    origin: Origin
    kind: Literal["model", "dataset"]

    def __str__(self) -> str:
        where = {"embedded": "embedded in data/", "local": "local folder", "cache": "hub cache", "hub": "the hub"}
        return f"{self.kind} {self.name!r} from {where[self.origin]} ({paths.display_path(self.location)})"


def embedded_models() -> list[str]:
    """Names of the tiny checkpoints shipped in data/models/."""
    root = paths.data_dir() / "models"
    return sorted(p.name for p in root.iterdir() if (p / "config.json").exists()) if root.exists() else []


def embedded_datasets() -> list[str]:
    """Names of the datasets shipped in data/datasets/."""
    root = paths.data_dir() / "datasets"
    return sorted(p.name for p in root.iterdir() if any(p.glob("*.jsonl"))) if root.exists() else []


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def _resolve(name: str, kind: Literal["model", "dataset"]) -> Source:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"A {kind} name must be a non-empty string, got {name!r}")
    embedded_root = paths.data_dir() / ("models" if kind == "model" else "datasets")
    embedded = embedded_root / name
    if "/" not in name and embedded.is_dir():
        return Source(name, str(embedded), "embedded", kind)
    local = Path(name).expanduser()
    if local.is_dir():
        return Source(name, str(local.resolve()), "local", kind)
    known = embedded_models() if kind == "model" else embedded_datasets()
    if not _looks_like_hub_id(name):
        raise SourceNotFoundError(
            f"Unknown {kind} {name!r}: it is not an embedded {kind} (known: {', '.join(known) or 'none built yet'}), "
            f"not an existing folder, and not a hub id of the form 'owner/name'. Check the spelling in the "
            f"parameters cell, or run `make data` if data/ is missing."
        )
    if hub.hub_reachable():
        return Source(name, name, "hub", kind)
    cached = hub.cached_snapshot(name, repo_type=kind)
    if cached is not None:
        return Source(name, str(cached), "cache", kind)
    alternative = profiles.embedded_alternative(name)
    why = "offline mode is on (HF_HUB_OFFLINE=1)" if hub.offline_requested() else "the hub is not reachable"
    raise SourceNotFoundError(
        f"Cannot load {kind} {name!r}: {why} and it is not in the local Hugging Face cache. Either connect to the "
        f"internet (and unset HF_HUB_OFFLINE) so the hub id {name!r} can download, or use the embedded "
        + (f"{kind} {alternative!r} from data/ (set PROFILE = 'tiny' in the parameters cell)." if alternative
           else f"{kind}s from data/ ({', '.join(known) or 'run `make data`'}) with PROFILE = 'tiny'.")
    )


def resolve_model(name: str) -> Source:
    """Find where model ``name`` can be loaded from, or raise :class:`SourceNotFoundError`."""
    return _resolve(name, "model")


def resolve_dataset(name: str) -> Source:
    """Find where dataset ``name`` can be loaded from, or raise :class:`SourceNotFoundError`."""
    return _resolve(name, "dataset")


def load_tokenizer(name: str, **kwargs: Any):
    """``AutoTokenizer.from_pretrained`` on the resolved source of ``name``."""
    from transformers import AutoTokenizer

    source = resolve_model(name)
    tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
    if tokenizer.pad_token is None:  # batching needs a pad token; the end-of-text token is the usual stand-in
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name: str, *, dtype: Any = None, device: Any = None, verbose: bool = True, **kwargs: Any):
    """Load ``(model, tokenizer)`` for ``name`` with the Auto classes, in eval mode on ``device``.

    ``dtype`` defaults to the device's inference dtype (:func:`course_utils.ground.machine.pick_precision`): float32 on CPU
    (what the tiny checkpoints were trained in), bf16 or fp16 on a GPU. Extra keyword arguments go to ``from_pretrained``
    (``quantization_config``, ``attn_implementation``, ...).
    """
    from transformers import AutoModelForCausalLM

    from course_utils.ground.machine import pick_precision

    source = resolve_model(name)
    if dtype is None:  # bf16 only where the GPU computes it natively (not on a T4), fp32 on CPU
        dtype = pick_precision(device or "cpu").inference_dtype
    model = AutoModelForCausalLM.from_pretrained(source.location, dtype=dtype, **kwargs)
    if device is not None and "quantization_config" not in kwargs and "device_map" not in kwargs:
        model = model.to(device)
    model.eval()
    tokenizer = load_tokenizer(name)
    if verbose:
        n = sum(p.numel() for p in model.parameters())
        print(f"Loaded {source}: {type(model).__name__}, {n:,} parameters")
    return model, tokenizer


@contextmanager
def _no_dataset_progress_bars() -> Iterator[None]:
    """``datasets``' progress bars off inside the block, as they were after it."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def load_text_dataset(name: str, split: str | None = None, *, max_examples: int | None = None):
    """Load a dataset with the ``datasets`` library: ``load_dataset("json", ...)`` for embedded ones.

    Hub datasets are streamed so that only ``max_examples`` rows are downloaded.
    """
    from datasets import Dataset, DatasetDict, load_dataset

    source = resolve_dataset(name)
    if source.origin in ("embedded", "local"):
        files = {p.stem: str(p) for p in sorted(Path(source.location).glob("*.jsonl"))}
        if not files:
            raise SourceNotFoundError(f"{source} has no .jsonl files")
        if split is not None and split not in files:
            raise KeyError(f"Dataset {name!r} has splits {sorted(files)}, not {split!r}")
        wanted = {split: files[split]} if split else files
        with _no_dataset_progress_bars():  # "Generating train split" here is a local cache being built: noise
            data = load_dataset("json", data_files=wanted)
        if max_examples is not None:
            data = DatasetDict({k: v.select(range(min(max_examples, len(v)))) for k, v in data.items()})
        return data[split] if split else data
    # Hub (or its cache): stream and materialise only what we need.
    splits = [split] if split else ["train", "validation"]
    out = {}
    for s in splits:
        stream = load_dataset(source.location, split=s, streaming=True)
        rows = list(islice(stream, max_examples)) if max_examples else list(stream)
        out[s] = Dataset.from_list(rows)
    return out[split] if split else DatasetDict(out)
