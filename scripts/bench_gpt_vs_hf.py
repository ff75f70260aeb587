"""Benchmark: does the from-scratch GPT train as fast as transformers' GPT-2 of the same size?

    python scripts/bench_gpt_vs_hf.py                       # the workbook's tiny GPT on this machine's CPU
    python scripts/bench_gpt_vs_hf.py --n-embd 768 --n-layer 12 --n-head 12 --vocab 50257 --seq-len 1024 \\
        --batch 8 --device cuda --bf16                       # GPT-2 124M on a GPU

Both models get the same weights (course_utils.models.gpt.to_hf_gpt2), the same batch, the same AdamW and the same
loss (next-token cross-entropy on the logits), and both use scaled_dot_product_attention. Training steps are
timed in alternating rounds (ours, theirs, ours, ...) so that a machine shared with other work slows both
alike; the result is the median step time of each. A benchmark, not a test: the goal is a ratio >= 0.90.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from course_utils.models.gpt import GPT, GPTConfig, to_hf_gpt2  # noqa: E402
from course_utils.training.speed import environment_line  # noqa: E402
from course_utils.training.train import logits_of  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--vocab", type=int, default=832)
    add("--n-embd", type=int, default=128)
    add("--n-layer", type=int, default=4)
    add("--n-head", type=int, default=4)
    add("--seq-len", type=int, default=128)
    add("--batch", type=int, default=8)
    add("--rounds", type=int, default=6, help="alternating rounds")
    add("--steps", type=int, default=3, help="timed steps per model per round")
    add("--device", default="cpu")
    add("--bf16", action="store_true", help="bf16 autocast (both models)")
    add("--threads", type=int, default=None)
    add("--json", type=Path, help="also write the result here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = GPTConfig(vocab_size=args.vocab, context_length=args.seq_len, n_embd=args.n_embd, n_layer=args.n_layer,
                    n_head=args.n_head, attention="sdpa")
    torch.manual_seed(0)
    ours = GPT(cfg).to(device).train()
    theirs = to_hf_gpt2(ours).to(device).train()
    theirs.config.use_cache = False
    data = torch.randint(0, args.vocab, (args.batch, args.seq_len + 1), generator=torch.Generator().manual_seed(0))
    inputs, targets = data[:, :-1].to(device), data[:, 1:].to(device)
    with torch.no_grad():   # same weights, same function: the comparison is fair
        gap = (logits_of(theirs(inputs)) - ours(inputs)).abs().max().item()
    models = {"from-scratch GPT": ours, "transformers GPT2LMHeadModel": theirs}
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()}
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.bf16 else nullcontext

    def step(name: str) -> float:
        model, optimizer = models[name], optimizers[name]
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        with autocast():
            logits = logits_of(model(inputs))
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    for name in models:   # warm-up
        step(name)
        step(name)
    times: dict[str, list[float]] = {name: [] for name in models}
    for round_index in range(args.rounds):
        order = list(models) if round_index % 2 == 0 else list(models)[::-1]
        for name in order:
            times[name] += [step(name) for _ in range(args.steps)]
    tokens = args.batch * args.seq_len
    result = {name: tokens / statistics.median(t) for name, t in times.items()}
    ratio = result["from-scratch GPT"] / result["transformers GPT2LMHeadModel"]
    report = {"environment": environment_line(device), "parameters": ours.num_parameters(),
              "settings": vars(args) | {"json": str(args.json) if args.json else None},
              "tokens_per_second": result, "ratio": ratio, "max_logit_difference": gap}
    print(f"{report['environment']}; {report['parameters']:,} parameters, batch {args.batch} x {args.seq_len}, "
          f"{'bf16 autocast' if args.bf16 else 'fp32'}")
    for name, tps in result.items():
        print(f"  {name:30s} {tps:12,.0f} tokens/s")
    print(f"  ratio (ours / transformers)    {ratio:12.3f}  (goal >= 0.90; same logits within {gap:.1e})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
