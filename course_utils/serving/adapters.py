"""Many LoRA adapters on one base, served three ways, each with the library call that does it.

* **One merged copy per adapter** (PEFT's ``merge_and_unload`` on a copy of the base): each request goes to its
  adapter's copy; memory grows by a whole model per adapter, and a batch holds one adapter's requests only.
* **Swapping on one base** (``set_adapter``): one base and every adapter in memory; the requests are grouped by
  adapter and each group is decoded after switching to it.
* **Mixed batches on one base** (``generate(..., adapter_names=[...])``, S-LoRA's idea in PEFT): one batch holds
  requests for different adapters; each adapted layer applies each row's own ``B A``.

All three decode the same greedy tokens (up to the rounding of a merge); what differs is the memory and the speed.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from course_utils.finetuning.metrics import left_pad

Served = list[list[int]]  # the generated token ids of each request, in request order


@torch.no_grad()
def greedy_tokens(model: Any, prompts: Sequence[Sequence[int]], new_tokens: int, pad_id: int, **kwargs: Any) -> Served:
    """Exactly ``new_tokens`` greedy tokens for each prompt, in one ``generate`` call (``kwargs`` go to it)."""
    device = next(model.parameters()).device
    ids, mask = (t.to(device) for t in left_pad(prompts, pad_id))
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, pad_token_id=pad_id, **kwargs)
    return out[:, ids.shape[1]:].tolist()


def merged_copies(peft_model: Any, names: Sequence[str]) -> dict[str, Any]:
    """One merged model per adapter: a copy of the adapted model with only that adapter, folded into the weights."""
    copies = {}
    for name in names:
        one = copy.deepcopy(peft_model)
        one.set_adapter(name)
        copies[name] = one.merge_and_unload(adapter_names=[name])
    return copies


def _groups(adapters: Sequence[str]) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = {}
    for row, name in enumerate(adapters):
        rows.setdefault(name, []).append(row)
    return rows


def _scatter(groups: dict[str, list[int]], outputs: dict[str, Served], n: int) -> Served:
    served: Served = [[] for _ in range(n)]
    for name, rows in groups.items():
        for row, tokens in zip(rows, outputs[name]):
            served[row] = tokens
    return served


def serve_merged(copies: dict[str, Any], prompts: Sequence[Sequence[int]], adapters: Sequence[str],
                 new_tokens: int, pad_id: int) -> Served:
    """Each adapter's requests on its own merged copy: one ``generate`` per adapter."""
    groups = _groups(adapters)
    outputs = {name: greedy_tokens(copies[name], [prompts[r] for r in rows], new_tokens, pad_id)
               for name, rows in groups.items()}
    return _scatter(groups, outputs, len(prompts))


def serve_swapping(peft_model: Any, prompts: Sequence[Sequence[int]], adapters: Sequence[str],
                   new_tokens: int, pad_id: int) -> Served:
    """One base: ``set_adapter`` to each adapter in turn and decode its requests."""
    groups, outputs = _groups(adapters), {}
    for name, rows in groups.items():
        peft_model.set_adapter(name)
        outputs[name] = greedy_tokens(peft_model, [prompts[r] for r in rows], new_tokens, pad_id)
    return _scatter(groups, outputs, len(prompts))


def serve_mixed(peft_model: Any, prompts: Sequence[Sequence[int]], adapters: Sequence[str],
                new_tokens: int, pad_id: int) -> Served:
    """One base, one batch: PEFT applies each row's adapter (``adapter_names``)."""
    return greedy_tokens(peft_model, prompts, new_tokens, pad_id, adapter_names=list(adapters))


def tokens_per_second(serve: Callable[..., Served], *args: Any, repeats: int) -> list[float]:
    """Generated tokens per second of ``serve(*args)``, once per repeat (after one untimed warm-up call)."""
    serve(*args)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        served = serve(*args)
        rates.append(sum(len(tokens) for tokens in served) / (time.perf_counter() - start))
    return rates
