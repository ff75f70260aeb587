"""Many processes, one model: distributed data parallel (DDP) training with the workbook's own loop.

Each process (one per GPU, or a few on a CPU with the ``gloo`` backend) holds a full copy of the model, reads
its own share of every batch (``make_train_loader(rank=, world_size=)``), and after ``backward()`` DDP averages
the gradients across processes (an all-reduce), so every copy takes the same optimizer step. With micro-batch
``b``, ``k`` accumulation steps and ``w`` processes, one optimizer step sees ``b * k * w`` sequences: the same
step as one process with a batch that large (exactly so while nothing random, such as dropout, differs).

Launch the same script on one machine with ``torchrun --standalone --nproc_per_node N scripts/train_ddp.py``
or ``accelerate launch --num_processes N scripts/train_ddp.py``; on a Slurm cluster see ``cluster/pretrain.slurm``.
Both launchers set ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_distributed` reads them, and without them runs as a single process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from course_utils.models.gpt import GPT, GPTConfig
from course_utils.training.text_data import SlidingWindowDataset, make_loader
from course_utils.training.train import TrainConfig, TrainState, make_train_loader, train


def effective_batch(micro_batch: int, grad_accum_steps: int, world_size: int) -> int:
    """Sequences per optimizer step: micro-batch x accumulation steps x processes."""
    for name, value in (("micro_batch", micro_batch), ("grad_accum_steps", grad_accum_steps),
                        ("world_size", world_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return micro_batch * grad_accum_steps * world_size


@dataclass(frozen=True)
class DistContext:
    """Who this process is: its rank among ``world_size`` processes, and the device it computes on."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str | None   # None: a single process, no process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def backend_for(device: torch.device | str) -> str:
    """``nccl`` between CUDA GPUs, ``gloo`` between CPU processes."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_distributed(device: str | None = None) -> DistContext:
    """Join the process group described by the launcher's environment variables (or run alone without them).

    ``device``: None picks ``cuda:LOCAL_RANK`` when CUDA is present, else the CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = None
    if world_size > 1:
        backend = backend_for(dev)
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistContext(rank=rank, local_rank=local_rank, world_size=world_size, device=dev, backend=backend)


def shutdown_distributed(*, wait: bool = True) -> None:
    """Leave the process group (safe to call when there is none); with ``wait``, once every rank has got here.

    A rank that destroys a gloo group while a peer still uses its connections can abort that peer ("terminate
    called without an active exception"): it happened when rank 1 left while rank 0 was writing the results.
    After an error there is no waiting, since the other ranks may never arrive.
    """
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce_mean(value: float, ctx: DistContext) -> float:
    """The mean of ``value`` over all processes (the value itself in a single process)."""
    if ctx.world_size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.item() / ctx.world_size


def wrap_model(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` when there are several processes; the model itself otherwise."""
    model = model.to(ctx.device)
    if ctx.world_size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def train_data_parallel(model: torch.nn.Module, train_set, val_set, cfg: TrainConfig, *, micro_batch: int,
                        ctx: DistContext, seed: int = 0, progress: bool = True) -> TrainState:
    """Train ``model`` under DDP with :func:`course_utils.training.train.train`; every rank returns the same history.

    Each rank reads its own shard of every epoch; the recorded train loss is averaged over the ranks (the
    validation loss is already the same everywhere, since every rank holds the same weights).
    """
    train_loader = make_train_loader(train_set, micro_batch, seed=seed, rank=ctx.rank, world_size=ctx.world_size)
    val_loader = make_loader(val_set, micro_batch, shuffle=False, drop_last=False)
    wrapped = wrap_model(model, ctx)

    def average_train_loss(state: TrainState) -> None:
        state.history.train_loss[-1] = all_reduce_mean(state.history.train_loss[-1], ctx)
        state.history.tokens_seen[-1] = state.tokens_seen * ctx.world_size

    state, _ = train(wrapped, train_loader, val_loader, cfg, device=ctx.device, on_eval=average_train_loss,
                     progress=progress and ctx.is_main)
    return state


# ----------------------------------------------------------------------------------------- launching the script
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_ddp.py"


def torchrun_command(nproc: int, script_args: list[str]) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N scripts/train_ddp.py ...`` (= torchrun)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            str(SCRIPT), *script_args]


def launch(nproc: int, script_args: list[str], out: str | Path, *, threads_per_process: int = 1,
           timeout: float = 600) -> dict[str, Any]:
    """Run ``scripts/train_ddp.py`` on ``nproc`` local processes with torchrun; returns its JSON result.

    On a CPU every process uses ``threads_per_process`` threads (OMP_NUM_THREADS), so N processes share the
    cores instead of fighting over them. Raises ``RuntimeError`` with the end of the log if the run fails.
    """
    import subprocess

    out = Path(out)
    root = str(SCRIPT.parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads_per_process), "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    command = torchrun_command(nproc, [*script_args, "--out", str(out), "--threads", str(threads_per_process)])
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun exited with status {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    result = json.loads(out.read_text())
    result["log"] = proc.stdout.strip()
    return result


# --------------------------------------------------------------------------------------- the launchable script
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Pretrain the workbook's GPT with DDP. Launch with torchrun --nproc_per_node N, accelerate "
                    "launch --num_processes N, srun (see cluster/pretrain.slurm), or plain python (one process).")
    add = parser.add_argument
    add("--tokens", type=Path, help="a .pt file from --prepare-tokens (or save_token_file); default: tokenise --dataset")
    add("--prepare-tokens", type=Path, metavar="FILE",
        help="tokenise --dataset with --tokenizer into FILE and exit (do it once, e.g. on a login node)")
    add("--dataset", default="tiny-stories", help="dataset name or hub id (course_utils.ground.sources)")
    add("--tokenizer", default="tiny-gpt2", help="tokenizer name or hub id")
    add("--max-stories", type=int, default=2000, help="training documents to tokenise (validation: a tenth)")
    add("--n-embd", type=int, default=64)
    add("--n-layer", type=int, default=2)
    add("--n-head", type=int, default=4)
    add("--seq-len", type=int, default=64)
    add("--micro-batch", type=int, default=4, help="sequences per process per forward pass")
    add("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    add("--steps", type=int, default=20)
    add("--lr", type=float, default=3e-3)
    add("--warmup", type=int, default=5)
    add("--eval-every", type=int, default=10)
    add("--eval-batches", type=int, default=4)
    add("--seed", type=int, default=0)
    add("--device", default=None, help="default: cuda:LOCAL_RANK if CUDA is present, else cpu")
    add("--threads", type=int, default=None, help="CPU threads per process (default: torch's choice)")
    add("--out", type=Path, help="write the run's history here as JSON (rank 0)")
    add("--save", type=Path, help="save the trained model here in Hugging Face format (rank 0)")
    add("--quiet", action="store_true", help="no progress bar")
    return parser


def save_token_file(path: str | Path, train_ids, val_ids, vocab_size: int) -> Path:
    """Write token ids for :func:`main` (``--tokens``): ``{"train", "val": LongTensor, "vocab_size": int}``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"train": torch.as_tensor(train_ids, dtype=torch.long), "val": torch.as_tensor(val_ids, dtype=torch.long),
                "vocab_size": int(vocab_size)}, path)
    return path


def _tokenise(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, int]:
    from course_utils.ground.sources import load_text_dataset, load_tokenizer
    from course_utils.training.text_data import encode_documents

    tokenizer = load_tokenizer(args.tokenizer)
    train_texts = load_text_dataset(args.dataset, "train", max_examples=args.max_stories)["text"]
    val_texts = load_text_dataset(args.dataset, "validation", max_examples=max(1, args.max_stories // 10))["text"]
    return (torch.tensor(encode_documents(tokenizer, train_texts)),
            torch.tensor(encode_documents(tokenizer, val_texts)), len(tokenizer))


def _load_tokens(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, int]:
    if args.tokens:
        saved = torch.load(args.tokens, weights_only=True)   # tensors and an int: nothing can run on load
        return saved["train"], saved["val"], int(saved["vocab_size"])
    return _tokenise(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``scripts/train_ddp.py``: the same run on 1 or N processes."""
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.prepare_tokens:
        train_ids, val_ids, vocab = _tokenise(args)
        save_token_file(args.prepare_tokens, train_ids, val_ids, vocab)
        print(f"wrote {args.prepare_tokens}: {len(train_ids):,} training and {len(val_ids):,} validation tokens")
        return 0
    ctx = init_distributed(args.device)
    finished = False
    try:
        train_ids, val_ids, vocab = _load_tokens(args)
        model_cfg = GPTConfig(vocab_size=vocab, context_length=args.seq_len, n_embd=args.n_embd,
                              n_layer=args.n_layer, n_head=args.n_head)
        torch.manual_seed(args.seed)   # the same initial weights on every rank (DDP also broadcasts rank 0's)
        model = GPT(model_cfg)
        cfg = TrainConfig(max_steps=args.steps, lr=args.lr, min_lr=args.lr / 10, warmup_steps=args.warmup,
                          grad_accum_steps=args.grad_accum, eval_every=args.eval_every,
                          eval_batches=args.eval_batches)
        state = train_data_parallel(model, SlidingWindowDataset(train_ids, args.seq_len),
                                    SlidingWindowDataset(val_ids, args.seq_len), cfg, micro_batch=args.micro_batch,
                                    ctx=ctx, seed=args.seed, progress=not args.quiet)
        if ctx.is_main:
            result = {"world_size": ctx.world_size, "backend": ctx.backend, "device": str(ctx.device),
                      "micro_batch": args.micro_batch, "grad_accum": args.grad_accum,
                      "effective_batch": effective_batch(args.micro_batch, args.grad_accum, ctx.world_size),
                      "history": state.history.as_dict(), "model": asdict(model_cfg)}
            print(f"world size {ctx.world_size} ({ctx.backend or 'single process'}), effective batch "
                  f"{result['effective_batch']}: final validation loss {state.history.val_loss[-1]:.4f}")
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(result, indent=2))
            if args.save:
                from course_utils.ground.sources import load_tokenizer
                from course_utils.models.gpt import save_hf

                save_hf(model, args.save, load_tokenizer(args.tokenizer))
        finished = True
    finally:
        shutdown_distributed(wait=finished)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
