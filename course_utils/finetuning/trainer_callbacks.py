"""What the workbook measures around a transformers or TRL ``Trainer``, as ``TrainerCallback`` objects.

A callback is the Trainer's own way to watch a run: ``SFTTrainer(..., callbacks=[meter])``. The training itself stays
the library's; these only record:

* :class:`TrainingMeter`: the wall time (and, where the Trainer counts them, the input tokens) of every optimizer
  step, the CPU time and the peak memory of the whole ``trainer.train()``
  (:mod:`course_utils.finetuning.memory_measure`);
* :class:`CheckpointLog`: which ``checkpoint-N`` folders exist after each save (what ``save_total_limit`` kept);
* :class:`StopAfterEpochs`: ends a run after some epochs, as if the job had been stopped there, to show resuming.

:func:`losses`, :func:`compare_losses` and :func:`plot_runs` read the trainer's ``state.log_history``;
:func:`checkpoint_contents` says what each file of a checkpoint holds.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from course_utils.finetuning.memory_measure import MemoryPeak, measure_peak_memory


class TrainingMeter(TrainerCallback):
    """Wall time of each optimizer step; CPU time and peak memory of the whole run (on the trainer's device)."""

    def __init__(self) -> None:
        self.step_seconds: list[float] = []
        self.step_tokens: list[int] = []  # input tokens per step; zeros unless include_num_input_tokens_seen is on
        self._tokens_seen = 0
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.steps = 0
        self.peak: MemoryPeak | None = None
        self._step_start = 0.0
        self._starts = (0.0, 0.0)
        self._memory: contextlib.ExitStack | None = None
        self._measured: dict[str, MemoryPeak] = {}

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - the Trainer's signature
        self._memory = contextlib.ExitStack()
        self._measured = self._memory.enter_context(measure_peak_memory(args.device))
        self._starts = (time.perf_counter(), time.process_time())
        self._tokens_seen = int(getattr(state, "num_input_tokens_seen", 0) or 0)

    def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        self._step_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        self.step_seconds.append(time.perf_counter() - self._step_start)
        seen = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        self.step_tokens.append(seen - self._tokens_seen)
        self._tokens_seen = seen

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        self.seconds = time.perf_counter() - self._starts[0]
        self.cpu_seconds = time.process_time() - self._starts[1]
        self.steps = int(state.global_step)
        if self._memory is not None:
            self._memory.close()
            self.peak = self._measured.get("peak")
            self._memory = None

    @property
    def seconds_per_step(self) -> float:
        """Mean wall time of a step, leaving out the first (one-time set-up: kernels, caches, allocations)."""
        steady = self.step_seconds[1:] or self.step_seconds
        return sum(steady) / len(steady) if steady else float("nan")

    @property
    def tokens_per_second(self) -> float | None:
        """Input tokens per second of the steps after the first (as :attr:`seconds_per_step`), or None where the
        Trainer did not count tokens (``include_num_input_tokens_seen``, off by default)."""
        tokens, seconds = self.step_tokens[1:] or self.step_tokens, self.step_seconds[1:] or self.step_seconds
        return sum(tokens) / sum(seconds) if sum(tokens) > 0 and sum(seconds) > 0 else None

    @property
    def cpu_seconds_per_step(self) -> float:
        """CPU time of this process (all its threads) per step, over the whole run."""
        return self.cpu_seconds / max(1, len(self.step_seconds))

    @property
    def first_step_seconds(self) -> float:
        return self.step_seconds[0] if self.step_seconds else float("nan")

    def summary(self) -> str:
        """One line: steps, time per step, peak memory above the start."""
        peak = f"; peak {self.peak.increase_bytes / 2**20:.0f} MiB above the start" if self.peak else ""
        return (f"{len(self.step_seconds)} steps in {self.seconds:.1f} s ({self.seconds_per_step:.3f} s per step "
                f"after the first){peak}")


class CheckpointLog(TrainerCallback):
    """After every save: the step, the epoch, and the ``checkpoint-N`` folders then in ``output_dir``."""

    def __init__(self) -> None:
        self.saves: list[dict[str, Any]] = []

    def on_save(self, args, state, control, **kwargs):  # noqa: ANN001 - the Trainer's signature
        folders = sorted(Path(args.output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        self.saves.append({"after step": state.global_step, "epoch": round(float(state.epoch or 0), 2),
                           "checkpoint folders now": ", ".join(p.name for p in folders)})


class StopAfterEpochs(TrainerCallback):
    """Stop training at the end of epoch ``epochs`` (the save of that epoch still happens), like a job cut short."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch_end(self, args, state, control, **kwargs):  # noqa: ANN001 - the Trainer's signature
        if state.epoch is not None and state.epoch >= self.epochs - 1e-6:
            control.should_training_stop = True
        return control


# What the files of a Trainer checkpoint hold (transformers' names; PEFT models save the adapter, not the base).
CHECKPOINT_FILES = {
    "adapter_model.safetensors": "the LoRA matrices A and B at this step (a full model saves model.safetensors)",
    "adapter_config.json": "r, alpha, target modules and the base model's name",
    "optimizer.pt": "AdamW's two moments for every trained parameter",
    "scheduler.pt": "where the learning-rate schedule is",
    "rng_state.pth": "the random generators' states (Python, NumPy, torch), so dropout and shuffling continue alike",
    "trainer_state.json": "global step, epoch, the log history and the best metric so far",
    "training_args.bin": "the TrainingArguments / SFTConfig of the run",
    "README.md": "a model card written by PEFT",
}


def checkpoint_contents(folder: str | Path) -> list[dict[str, Any]]:
    """The files of a ``checkpoint-N`` folder, largest first, each with its size and what it holds."""
    files = sorted((p for p in Path(folder).iterdir() if p.is_file()), key=lambda p: -p.stat().st_size)
    return [{"file": p.name, "bytes": p.stat().st_size,
             "holds": CHECKPOINT_FILES.get(p.name, "the tokenizer (saved because processing_class was given)"
                                           if "token" in p.name or "chat_template" in p.name else "")}
            for p in files]


def compare_losses(uninterrupted: list[dict[str, Any]], resumed: list[dict[str, Any]],
                   steps: Sequence[int]) -> list[dict[str, Any]]:
    """The training loss of two runs at the same steps, side by side, and whether they are equal (to 1e-6)."""
    a, b = losses(uninterrupted), losses(resumed)
    return [{"step": step, "uninterrupted run": a.get(step, float("nan")), "resumed run": b.get(step, float("nan")),
             "equal": "yes" if step in a and step in b and math.isclose(a[step], b[step], rel_tol=1e-6) else "NO"}
            for step in steps]


def losses(log_history: list[dict[str, Any]], key: str = "loss") -> dict[int, float]:
    """``{step: value}`` of one logged quantity (the training ``loss`` by default, or ``eval_loss``)."""
    return {int(entry["step"]): float(entry[key]) for entry in log_history if key in entry}


def plot_runs(runs: dict[str, list[dict[str, Any]]]) -> Any:
    """Training loss against the step for each named run's ``log_history``, held-out losses as stars; a Figure."""
    from course_utils.reporting.plots import new_figure

    fig = new_figure(figsize=(6.5, 3.4), layout="constrained")
    ax = fig.subplots()
    for label, history in runs.items():
        train = losses(history)
        line = ax.plot(list(train), list(train.values()), marker=".", label=f"{label}: training loss")[0]
        held_out = losses(history, "eval_loss")
        if held_out:
            ax.scatter(list(held_out), list(held_out.values()), color=line.get_color(), marker="*", s=120, zorder=3,
                       label=f"{label}: held-out loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy per completion token")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
