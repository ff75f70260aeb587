"""The workbook's training loop for causal language models: one loop, :func:`train`, read in one screen.

It works for the from-scratch GPT (which returns logits) and for any transformers ``*ForCausalLM`` (which returns
an object with ``.logits``). Features, each a few lines: AdamW with decoupled weight decay on matrices only,
linear warm-up then cosine decay, gradient clipping, gradient accumulation, autocast and a gradient scaler from
the precision recipe, periodic evaluation on a held-out split, a progress bar, and checkpoints that resume exactly.
Notebooks 03 and 04 and DDP share it; what only distillation or a cut run needs waits in :class:`TrainExtras`.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from course_utils.ground import machine
from course_utils.ground.machine import Precision


@dataclass
class TrainConfig:
    """Every knob of :func:`train`."""

    max_steps: int = 200
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 20
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0
    grad_accum_steps: int = 1
    eval_every: int = 50
    eval_batches: int = 10
    fused_adamw: bool | None = None  # None: fused where the device supports it


@dataclass
class History:
    """What happened during training, one entry per evaluation."""

    step: list[int] = field(default_factory=list)
    tokens_seen: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def record(self, state: TrainState, lr: float, train_loss: float, val_loss: float) -> None:
        """One evaluation's entry."""
        self.step.append(state.step)
        self.tokens_seen.append(state.tokens_seen)
        self.lr.append(lr)
        self.train_loss.append(train_loss)
        self.val_loss.append(val_loss)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def plot(self, ax=None, title: str = "Loss against tokens seen"):
        """Train and validation loss against tokens seen."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(self.tokens_seen, self.train_loss, label="train", marker=".")
        ax.plot(self.tokens_seen, self.val_loss, label="validation", marker=".")
        ax.set_xlabel("tokens seen")
        ax.set_ylabel("cross-entropy loss")
        ax.set_title(title)
        ax.legend()
        ax.grid(alpha=0.3)
        return ax


@dataclass
class TrainState:
    """Where training stands: enough, with the model and optimizer, to resume exactly."""

    step: int = 0
    tokens_seen: int = 0
    history: History = field(default_factory=History)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at ``step``: linear warm-up to ``lr``, then cosine decay to ``min_lr`` at ``max_steps``."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


LrSchedule = Callable[[int, int, int, float, float], float]  # (step, max_steps, warmup_steps, max_lr, min_lr) -> lr


def scheduled_lr(step: int, cfg: TrainConfig, lr_schedule: LrSchedule | None = None) -> float:
    """The rate :func:`train` uses at ``step``: ``lr_schedule`` (a notebook's own) if given, else :func:`lr_at`."""
    if lr_schedule is None:
        return lr_at(step, cfg)
    return float(lr_schedule(step, cfg.max_steps, cfg.warmup_steps, cfg.lr, cfg.min_lr))


def plot_lr_schedule(cfg: TrainConfig, ax=None, title: str = "Learning rate: warm-up, then cosine decay", *,
                     lr_schedule: LrSchedule | None = None):
    """The learning rate :func:`train` uses at each step of ``cfg`` (with ``lr_schedule``, if given)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 2.5))
    steps = list(range(cfg.max_steps))
    ax.plot(steps, [scheduled_lr(s, cfg, lr_schedule) for s in steps])
    ax.axvline(cfg.warmup_steps, color="grey", ls=":", label=f"end of warm-up (step {cfg.warmup_steps})")
    ax.set(xlabel="optimizer step", ylabel="learning rate", title=title)
    ax.legend()
    ax.grid(alpha=0.3)
    return ax


def plot_histories(histories: dict[str, History], ax=None, title: str = "Validation loss against tokens seen",
                   field_name: str = "val_loss", mark: tuple[float, str] | None = None):
    """One curve per named run (``field_name``: ``val_loss`` or ``train_loss``) against tokens seen.

    ``mark=(tokens, label)`` draws a vertical line there (e.g. where a checkpoint was saved).
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    styles = ["-", "--", ":", "-."]
    for i, (name, history) in enumerate(histories.items()):
        ax.plot(history.tokens_seen, getattr(history, field_name), styles[i % len(styles)], marker="o",
                markersize=4 + 2 * (len(histories) - i), label=name)
    if mark is not None:
        ax.axvline(mark[0], color="grey", ls=":", label=mark[1])
    ylabel = {"val_loss": "validation loss", "train_loss": "training loss"}.get(field_name, field_name)
    ax.set(xlabel="tokens seen", ylabel=ylabel, title=title)
    ax.legend()
    ax.grid(alpha=0.3)
    return ax


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices and embeddings only (not on biases or norm gains)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = cfg.fused_adamw
    if fused is None:
        fused = bool(params) and params[0].device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused)


def logits_of(output: Any) -> torch.Tensor:
    """Logits from a model's output: a tensor (from-scratch GPT) or an object with ``.logits`` (transformers)."""
    return output if isinstance(output, torch.Tensor) else output.logits


def lm_loss(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy; targets equal to -100 are ignored (masked prompt tokens, padding)."""
    logits = logits_of(model(inputs))
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device | str,
             max_batches: int | None = None, autocast_ctx: Callable[[], Any] = nullcontext) -> float:
    """Mean loss over the first ``max_batches`` batches of ``loader`` (all of them when None)."""
    was_training = model.training
    model.eval()
    losses = []
    for inputs, targets in itertools.islice(loader, max_batches):
        with autocast_ctx():
            losses.append(lm_loss(model, inputs.to(device), targets.to(device)).item())
    model.train(was_training)
    if not losses:
        raise ValueError("The evaluation loader produced no batches (is it smaller than one batch with drop_last?)")
    return sum(losses) / len(losses)


def make_train_loader(dataset: Dataset, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                      num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A shuffled loader whose order depends only on (seed, epoch): the same on resume and across DDP ranks.

    Each of ``world_size`` processes gets its own ``1 / world_size`` share of every epoch.
    """
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                 drop_last=True)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True,
                      num_workers=num_workers, pin_memory=pin_memory)


def _batches_from(loader: DataLoader, start_batch: int):
    """Yield batches forever from ``loader``, starting at batch number ``start_batch`` (epochs reshuffle)."""
    per_epoch = len(loader)
    if per_epoch == 0:
        raise ValueError("The training loader has no full batch: use a smaller batch size or more data.")
    epoch, skip = divmod(start_batch, per_epoch)
    while True:
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        yield from itertools.islice(loader, skip, None)
        epoch, skip = epoch + 1, 0


@dataclass
class TrainExtras:
    """What only some runs of :func:`train` need, kept out of the loop a lesson reads.

    ``loss_fn`` replaces the training loss (distillation passes the student's loss against its teacher); evaluation
    always reports plain next-token cross-entropy. ``stop_at`` ends the run before ``cfg.max_steps`` (a run cut
    short, to resume later) while the learning rate still follows the whole schedule. ``lr_schedule(step,
    max_steps, warmup_steps, max_lr, min_lr)`` replaces :func:`lr_at` (notebook 03 trains with the student's).
    """

    loss_fn: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] = lm_loss
    stop_at: int | None = None
    lr_schedule: LrSchedule | None = None


def train(model: torch.nn.Module, train_loader: DataLoader, val_loader: DataLoader | None, cfg: TrainConfig, *,
          device: torch.device | str = "cpu", precision: Precision | None = None,
          optimizer: torch.optim.Optimizer | None = None, state: TrainState | None = None,
          on_eval: Callable[[TrainState], None] | None = None, progress: bool = True,
          extras: TrainExtras | None = None) -> tuple[TrainState, torch.optim.Optimizer]:
    """Train until ``cfg.max_steps`` optimizer steps; returns ``(state, optimizer)``.

    ``precision`` (:func:`course_utils.ground.machine.pick_precision`) sets autocast and the gradient scaler (fp32
    when None). Pass the ``state`` and ``optimizer`` of a checkpoint to resume: the data order and learning rate
    pick up exactly where they left off. ``on_eval`` is called after each evaluation (to print a sample, save a
    checkpoint, or, under DDP, average the recorded loss over the processes).
    """
    extras = extras or TrainExtras()
    device = torch.device(device)
    model.to(device).train()
    optimizer = optimizer or make_optimizer(model, cfg)
    state = state or TrainState()
    end = cfg.max_steps if extras.stop_at is None else min(cfg.max_steps, extras.stop_at)
    autocast, scaler = _mixed_precision(precision, device)  # no-ops in fp32
    batches = _batches_from(train_loader, state.step * cfg.grad_accum_steps)
    started = time.perf_counter()
    for step in (bar := _progress(range(state.step, end), enabled=progress, initial=state.step, total=end)):
        rate = scheduled_lr(step, cfg, extras.lr_schedule)
        for group in optimizer.param_groups:
            group["lr"] = rate
        loss_sum = 0.0
        for micro in range(cfg.grad_accum_steps):  # gradients add up over the micro-batches of one step
            inputs, targets = (tensor.to(device) for tensor in next(batches))
            with _sync_gradients_if(micro == cfg.grad_accum_steps - 1, model):
                with autocast():
                    loss = extras.loss_fn(model, inputs, targets) / cfg.grad_accum_steps
                scaler.scale(loss).backward()
            loss_sum += loss.item()
            state.tokens_seen += inputs.numel()
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        state.step = step + 1
        if progress:
            bar.set_postfix(loss=f"{loss_sum:.3f}", lr=f"{rate:.2e}")
        if state.step % cfg.eval_every == 0 or state.step == end:
            val_loss = evaluate(model, val_loader, device, cfg.eval_batches, autocast) if val_loader else math.nan
            state.history.record(state, rate, loss_sum, val_loss)
            if on_eval is not None:
                on_eval(state)
    state.history.seconds += time.perf_counter() - started
    return state, optimizer


def _mixed_precision(precision: Precision | None, device: torch.device) -> tuple[Callable[[], Any], Any]:
    """The autocast context (a factory) and the gradient scaler of ``precision``; both pass through in fp32."""
    if precision is None:
        return nullcontext, machine.grad_scaler(machine.precision_for("cpu"))
    return (lambda: machine.autocast(precision, device)), machine.grad_scaler(precision)


def _sync_gradients_if(last_micro_batch: bool, model: torch.nn.Module) -> Any:
    """Under DDP, all-reduce the gradients once per optimizer step (the last micro-batch), not after each one."""
    return nullcontext() if last_micro_batch or not hasattr(model, "no_sync") else model.no_sync()


def _progress(iterable, *, enabled: bool, **kwargs):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc="training", unit="step", **kwargs)


# ----------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: TrainState) -> Path:
    """Write ``model.safetensors`` (weights) and ``training_state.pt`` (optimizer, step, history, RNG)."""
    from safetensors.torch import save_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, str(folder / "model.safetensors"))  # handles tied (shared) weights
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "step": state.step,
            "tokens_seen": state.tokens_seen,
            "history": state.history.as_dict(),
            "torch_rng": torch.get_rng_state(),
        },
        folder / "training_state.pt",
    )
    return folder


def load_checkpoint(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    device: torch.device | str = "cpu") -> TrainState:
    """Restore weights (and optimizer, step, history, RNG when ``optimizer`` is given) from :func:`save_checkpoint`.

    Uses ``torch.load(weights_only=True)``: a checkpoint cannot run code when it is loaded.
    """
    from safetensors.torch import load_model

    folder = Path(folder)
    load_model(model, str(folder / "model.safetensors"), device=str(device))
    saved = torch.load(folder / "training_state.pt", map_location=device, weights_only=True)
    if optimizer is not None:
        optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["torch_rng"].cpu())
    return TrainState(step=saved["step"], tokens_seen=saved["tokens_seen"], history=History(**saved["history"]))
