"""Figures that depend on the CPU's kernels, printed as JSON: run in a subprocess by tests/test_cpu_portability.py
with other ATEN_CPU_CAPABILITY, thread and bitsandbytes-kernel settings than the host's own."""

from __future__ import annotations

import importlib
import json
import os
import sys

import torch

PROMPTS = ["Once upon a time, there was", "Translate to Zorbish: the red cat sleeps.\nZorbish:"]


def main() -> None:
    from course_utils.finetuning import quant  # first: it quiets bitsandbytes' import-time warning
    from course_utils.ground import sources
    from course_utils.models.gpt import GPT, GPTConfig

    bnb_modules = importlib.import_module("bitsandbytes.nn.modules")

    if os.environ.get("PROBE_BNB_KERNEL") == "generic":  # what a CPU without AVX-512 BF16 runs
        bnb_modules.has_avx512bf16 = lambda: False
    torch.manual_seed(0)
    model, tokenizer = sources.load_causal_lm("tiny-llama", verbose=False)
    tokenizer.padding_side = "left"
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
        greedy = model.generate(**batch, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)

    from transformers import BitsAndBytesConfig

    nf4 = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    qmodel, _ = sources.load_causal_lm("tiny-llama", verbose=False, quantization_config=nf4)
    with torch.no_grad():
        qlogits = qmodel(**batch).logits

    gpt = GPT(GPTConfig(vocab_size=len(tokenizer), context_length=64, n_embd=64, n_layer=2, n_head=4))
    optimizer = torch.optim.AdamW(gpt.parameters(), lr=1e-3)
    data = torch.randint(0, len(tokenizer), (4, 65), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(gpt(data[:, :-1]).flatten(0, 1), data[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())

    json.dump({"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
               "bnb_kernel": quant.bnb_cpu_kernel(qmodel), "logits": logits.flatten().tolist(),
               "greedy": greedy.tolist(), "nf4_logits": qlogits.flatten().tolist(), "train_losses": losses},
              sys.stdout)


if __name__ == "__main__":
    main()
