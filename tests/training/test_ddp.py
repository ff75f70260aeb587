"""DDP: effective batch, per-rank shards, and two gloo processes matching one process with the same batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from course_utils.ground import paths
from course_utils.models.gpt import GPT, GPTConfig
from course_utils.training.ddp import (
    effective_batch,
    init_distributed,
    main,
    save_token_file,
    train_data_parallel,
)
from course_utils.training.text_data import SlidingWindowDataset
from course_utils.training.train import TrainConfig, make_train_loader


def _stream(n: int, seed: int, vocab: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    steps = torch.where(torch.rand(n, generator=g) < 0.8, 1, torch.randint(0, vocab, (n,), generator=g))
    return torch.cumsum(steps, 0) % vocab


def test_effective_batch():
    assert effective_batch(4, 8, 16) == 512
    with pytest.raises(ValueError, match="world_size"):
        effective_batch(4, 1, 0)


def test_without_a_launcher_it_is_one_process(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.is_main) == (0, 1, None, True)


def test_ranks_share_out_exactly_the_single_process_batch():
    data = SlidingWindowDataset(_stream(2000, 0), 16)
    whole = next(iter(make_train_loader(data, 8, seed=3)))[0]
    shards = [next(iter(make_train_loader(data, 4, seed=3, rank=r, world_size=2)))[0] for r in (0, 1)]
    as_set = lambda batch: sorted(tuple(row) for row in batch.tolist())  # noqa: E731
    assert as_set(torch.cat(shards)) == as_set(whole)
    assert not set(map(tuple, shards[0].tolist())) & set(map(tuple, shards[1].tolist()))


def test_single_process_run_through_the_ddp_entry_point(tmp_path, monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    tokens = save_token_file(tmp_path / "tokens.pt", _stream(3000, 0), _stream(600, 1), 40)
    assert main(["--tokens", str(tokens), "--steps", "4", "--eval-every", "2", "--n-embd", "16", "--n-layer", "1",
                 "--seq-len", "16", "--quiet", "--out", str(tmp_path / "run.json")]) == 0
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["world_size"] == 1 and run["effective_batch"] == 4 and len(run["history"]["val_loss"]) == 2


def test_ranks_leave_the_group_together_unless_one_failed(monkeypatch):
    import course_utils.training.ddp as ddp

    calls = []
    monkeypatch.setattr(ddp.dist, "is_available", lambda: True)
    monkeypatch.setattr(ddp.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(ddp.dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(ddp.dist, "destroy_process_group", lambda: calls.append("destroy"))
    ddp.shutdown_distributed()
    assert calls == ["barrier", "destroy"]  # a rank still writing its results is not cut off
    calls.clear()
    ddp.shutdown_distributed(wait=False)
    assert calls == ["destroy"]  # after an error the other ranks may never reach the barrier


ARGS = ["--steps", "6", "--eval-every", "3", "--n-embd", "16", "--n-layer", "1", "--n-head", "2", "--seq-len", "16",
        "--micro-batch", "4", "--quiet", "--threads", "1"]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_effective_batch(tmp_path):
    tokens = save_token_file(tmp_path / "tokens.pt", _stream(3000, 0), _stream(600, 1), 40)
    out = tmp_path / "ddp.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(paths.REPO_ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(paths.REPO_ROOT / "scripts" / "train_ddp.py"), "--tokens", str(tokens), "--out", str(out),
               *ARGS]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads(out.read_text())
    assert ddp["world_size"] == 2 and ddp["backend"] == "gloo" and ddp["effective_batch"] == 8

    # One process, micro-batch 4 accumulated twice: the same 8 sequences per optimizer step.
    saved = torch.load(tokens, weights_only=True)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, context_length=16, n_embd=16, n_layer=1, n_head=2))
    cfg = TrainConfig(max_steps=6, lr=3e-3, min_lr=3e-4, warmup_steps=5, grad_accum_steps=2, eval_every=3,
                      eval_batches=4)
    single = train_data_parallel(model, SlidingWindowDataset(saved["train"], 16), SlidingWindowDataset(saved["val"], 16),
                                 cfg, micro_batch=4, ctx=init_distributed("cpu"), progress=False)
    assert ddp["history"]["tokens_seen"] == single.history.tokens_seen
    assert ddp["history"]["val_loss"] == pytest.approx(single.history.val_loss, rel=1e-4)
    assert ddp["history"]["train_loss"] == pytest.approx(single.history.train_loss, rel=1e-4)
