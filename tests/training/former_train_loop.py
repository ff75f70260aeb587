"""The training loop as it stood before it was shortened (workbook commit 6bd3d6e), kept only as a reference.

tests/training/test_train_loop_unchanged.py runs it beside :func:`course_utils.training.train.train` on the same seed
and asks for the same losses, weights and history, so the shorter loop is held to the numbers of the longer one.
Only its own body is copied; the helpers it called (schedule, optimizer, loss, evaluation, batches) are the
package's, unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch.utils.data import DataLoader

from course_utils.training.train import (
    TrainConfig,
    TrainState,
    _batches_from,
    evaluate,
    lm_loss,
    lr_at,
    make_optimizer,
)


def former_train(model: torch.nn.Module, train_loader: DataLoader, val_loader: DataLoader | None, cfg: TrainConfig, *,
                 device: torch.device | str = "cpu", optimizer: torch.optim.Optimizer | None = None,
                 state: TrainState | None = None, autocast_dtype: torch.dtype | None = None,
                 grad_scaler: Any = None, on_eval: Callable[[TrainState], None] | None = None,
                 stop_at: int | None = None, all_reduce: Callable[[], None] | None = None,
                 loss_fn: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] = lm_loss,
                 ) -> tuple[TrainState, torch.optim.Optimizer]:
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
    started = time.perf_counter()
    for step in range(state.step, end):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss_sum = 0.0
        for micro in range(cfg.grad_accum_steps):
            inputs, targets = next(batches)
            inputs, targets = inputs.to(device), targets.to(device)
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
