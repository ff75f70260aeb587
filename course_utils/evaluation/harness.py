"""The workbook's tasks for EleutherAI's lm-evaluation-harness, run offline on the workbook's own models.

The task definitions are YAML files beside this module (``tasks/*.yaml``), written as lm-eval documents them;
:func:`task_configs` reads them and points their ``data_files`` at ``data/`` on this machine, so that
``lm_eval.simple_evaluate(tasks=task_configs())`` needs neither the Hub nor an installed task folder.
"""

from __future__ import annotations

import contextlib
import importlib
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from course_utils.ground import paths

TASKS_DIR = Path(__file__).parent / "tasks"
TASKS = ("zorbish_translate", "zorbish_choice", "stories_perplexity")
CHOICES = 4  # the right translation and three others


def with_choices(docs: Any, seed: int = 0) -> Any:
    """Each Zorbish row with ``choices`` (its translation among three others of the split) and ``gold``."""
    completions = list(docs["completion"])

    def add(row: dict[str, Any], index: int) -> dict[str, Any]:
        rng = random.Random(seed * 100_003 + index)
        others = sorted({text for text in completions if text != row["completion"]})
        choices = rng.sample(others, CHOICES - 1)
        gold = rng.randrange(CHOICES)
        choices.insert(gold, row["completion"])
        return {"choices": choices, "gold": gold}

    return docs.map(add, with_indices=True)


def task_configs(names: Sequence[str] = TASKS, data_dir: Path | None = None) -> list[dict[str, Any]]:
    """The shipped task definitions as lm-eval config dicts, their data files resolved under ``data_dir``."""
    data_dir = data_dir or paths.data_dir()
    configs = []
    for name in names:
        config = yaml.safe_load((TASKS_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
        files = config["dataset_kwargs"]["data_files"]
        config["dataset_kwargs"]["data_files"] = {split: str(data_dir / path) for split, path in files.items()}
        if name == "zorbish_choice":
            config["process_docs"] = with_choices  # a callable where the YAML would write !function
        configs.append(config)
    return configs


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """lm-eval's progress bars off while the block runs: it passes ``disable=`` itself, which tqdm's switch cannot
    override, so its modules get a tqdm that is always disabled (a notebook keeps the tables, not 30 bars)."""
    from unittest import mock

    import tqdm

    def silent(*args: Any, **kwargs: Any) -> Any:
        return tqdm.tqdm(*args, **{**kwargs, "disable": True})

    with contextlib.ExitStack() as stack:
        for name in ("lm_eval.api.model", "lm_eval.api.task", "lm_eval.models.huggingface"):
            stack.enter_context(mock.patch.object(importlib.import_module(name), "tqdm", silent))
        yield


def results_rows(model: str, results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (task, metric) of ``simple_evaluate``'s results, with its standard error where lm-eval has one."""
    rows = []
    for task, values in results["results"].items():
        for key, value in values.items():
            if key == "alias" or "_stderr," in key or not isinstance(value, (int, float)):
                continue
            metric, _, filter_name = key.partition(",")
            stderr = values.get(f"{metric}_stderr,{filter_name}")
            rows.append({"model": model, "task": task, "metric": metric, "value": float(value),
                         "stderr": float(stderr) if isinstance(stderr, (int, float)) else None})
    return rows


def per_item(samples: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    """One metric per item from ``simple_evaluate(log_samples=True)``'s samples of one task, in document order."""
    return [float(sample[key]) for sample in sorted(samples, key=lambda sample: sample["doc_id"])]


def choice_loglikelihoods(samples: Sequence[Mapping[str, Any]]) -> list[list[float]]:
    """Per item, the summed log-likelihood lm-eval gave each choice (its ``resps``), in document order."""
    ordered = sorted(samples, key=lambda sample: sample["doc_id"])
    return [[float(resp[0][0]) for resp in sample["resps"]] for sample in ordered]


def wide_table(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """:func:`results_rows` as one row per model and one column per task's metric, "value ± stderr"."""
    table: dict[str, dict[str, str]] = {}
    for row in rows:
        cell = f"{row['value']:.3f}" + (f" ± {row['stderr']:.3f}" if row["stderr"] is not None else "")
        table.setdefault(row["model"], {"model": row["model"]})[f"{row['task']} {row['metric']}"] = cell
    return list(table.values())
