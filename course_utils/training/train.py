"""The workbook's training loop for causal language models: one readable loop for every notebook.

It works for the from-scratch GPT (which returns logits) and for any transformers ``*ForCausalLM`` (which returns
an object with ``.logits``). Features, each a few lines: AdamW with decoupled weight decay on matrices only,
linear warm-up then cosine decay, gradient clipping, gradient accumulation, optional autocast and a gradient
scaler, periodic evaluation on a held-out split, a progress bar, and checkpoints that resume exactly.
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


def plot_lr_schedule(cfg: TrainConfig, ax=None, title: str = "Learning rate: warm-up, then cosine decay"):
    """The learning rate :func:`train` uses at each step of ``cfg``."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 2.5))
    steps = list(range(cfg.max_steps))
    ax.plot(steps, [lr_at(s, cfg) for s in steps])
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


def train(model: torch.nn.Module, train_loader: DataLoader, val_loader: DataLoader | None, cfg: TrainConfig, *,
          device: torch.device | str = "cpu", optimizer: torch.optim.Optimizer | None = None,
          state: TrainState | None = None, autocast_dtype: torch.dtype | None = None,
          grad_scaler: Any = None, on_eval: Callable[[TrainState], None] | None = None,
          progress: bool = True, stop_at: int | None = None, all_reduce: Callable[[], None] | None = None,
          loss_fn: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] = lm_loss,
          ) -> tuple[TrainState, torch.optim.Optimizer]:
    """Train until ``cfg.max_steps`` (or ``stop_at``) optimizer steps; returns ``(state, optimizer)``.

    Pass the ``state`` and ``optimizer`` of a checkpoint to resume; the data order and learning rate pick up
    exactly where they left off. ``on_eval`` is called after each evaluation (e.g. to print a sample).
    ``all_reduce`` averages gradients across processes before each step (DDP done by hand). ``loss_fn`` replaces
    the training loss (distillation passes its own); evaluation always reports plain next-token cross-entropy.
    """
    device = torch.device(device)
    model.to(device).train()
    optimizer = optimizer or make_optimizer(model, cfg)
    state = state or TrainState()
    end = min(cfg.max_steps, stop_at) if stop_at is not None else cfg.max_steps

    def autocast_ctx():
        if autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=autocast_dtype)

    batches = _batches_from(train_loader, state.step * cfg.grad_accum_steps)
    bar = _progress(range(state.step, end), enabled=progress, initial=state.step, total=end)
    started = time.perf_counter()
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss_sum = 0.0
        for micro in range(cfg.grad_accum_steps):
            inputs, targets = next(batches)
            inputs, targets = inputs.to(device), targets.to(device)
            # Under DDP, all-reduce the gradients once per optimizer step, not after every micro-batch.
            last_micro = micro == cfg.grad_accum_steps - 1
            sync = nullcontext() if last_micro or not hasattr(model, "no_sync") else model.no_sync()
            with sync:
                with autocast_ctx():
                    loss = loss_fn(model, inputs, targets) / cfg.grad_accum_steps
                (grad_scaler.scale(loss) if grad_scaler else loss).backward()
            loss_sum += loss.item()
            state.tokens_seen += inputs.numel()
        if all_reduce is not None:
            all_reduce()
        if grad_scaler:
            grad_scaler.unscale_(optimizer)
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        if grad_scaler:
            grad_scaler.step(optimizer)
            grad_scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.step = step + 1
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss_sum:.3f}", lr=f"{lr_at(step, cfg):.2e}")
        last = state.step == end
        if state.step % cfg.eval_every == 0 or last:
            history = state.history
            history.step.append(state.step)
            history.tokens_seen.append(state.tokens_seen)
            history.lr.append(lr_at(step, cfg))
            history.train_loss.append(loss_sum)
            history.val_loss.append(
                evaluate(model, val_loader, device, cfg.eval_batches, autocast_ctx) if val_loader else float("nan")
            )
            if on_eval is not None:
                on_eval(state)
    state.history.seconds += time.perf_counter() - started
    return state, optimizer


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
