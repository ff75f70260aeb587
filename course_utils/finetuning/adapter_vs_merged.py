"""Adapter or merged, at inference: do they compute the same, how fast, how big, how quickly they start.

An adapter model (a PEFT ``PeftModel``) computes ``W0 x + (alpha/r) B (A x)`` in every adapted layer; the merged one
(``merge_and_unload``) computes ``(W0 + (alpha/r) B A) x``. :func:`compare_merged` measures both on the same prompts;
:func:`generate_mixed` serves several adapters in one batch; :func:`tenancy_table` counts the bytes of serving many.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from course_utils.finetuning import metrics
from course_utils.finetuning.memory_measure import human_bytes, model_bytes
from course_utils.finetuning.sft_data import encode_prompt, stop_ids
from course_utils.finetuning.sft_eval import generate, logits_on
from course_utils.reporting import timing


@torch.no_grad()
def seconds_per_token(model: Any, tokenizer: Any, prompt_ids: Sequence[int], *, new_tokens: int = 32,
                      repeats: int = 3) -> float:
    """Wall time per generated token over ``repeats`` runs, batch 1, greedy, exactly ``new_tokens`` tokens."""
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids)], device=device)
    config = metrics.greedy_config(new_tokens, [tokenizer.eos_token_id], tokenizer.pad_token_id,
                                   min_new_tokens=new_tokens)
    model.eval()
    seconds = timing.seconds_per_call(
        lambda: model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config), repeats)
    return seconds / new_tokens


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cold_start(load: Callable[[], Any], tokenizer: Any, prompt_ids: Sequence[int]) -> tuple[float, Any]:
    """Seconds from nothing in memory to the first generated token: ``load()`` then one greedy token."""
    start = time.perf_counter()
    model = load()
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids)], device=device)
    config = metrics.greedy_config(1, [tokenizer.eos_token_id], tokenizer.pad_token_id)
    with torch.no_grad():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
    _sync(device)
    return time.perf_counter() - start, model


def merge_tolerance(dtype: torch.dtype) -> float:
    """How far merged logits may drift from the adapter's, relative to the largest logit.

    fp32: 1e-4 (only the order of additions changes). 16-bit: 3e-2, because ``W0 + (alpha/r) B A`` is rounded
    to 8 (bf16) or 11 (fp16) significant bits, so small updates to large weights partly round away.
    """
    return 1e-4 if dtype == torch.float32 else 3e-2


def base_dtype(model: Any) -> torch.dtype:
    """The dtype of the frozen base weights (the first floating-point parameter that is not trained)."""
    for p in model.parameters():
        if p.is_floating_point() and not p.requires_grad:
            return p.dtype
    return next(model.parameters()).dtype


def compare_merged(adapter_model: Any, merged_model: Any, tokenizer: Any, prompts: Sequence[str], *,
                   chat: bool | None, load_adapter_model: Callable[[], Any], load_merged_model: Callable[[], Any],
                   new_tokens: int = 32) -> dict[str, Any]:
    """Adapter versus merged on the same prompts: logits, greedy answers, time per token, bytes, cold start."""
    reference = logits_on(adapter_model, tokenizer, prompts, chat=chat)
    merged_logits = logits_on(merged_model, tokenizer, prompts, chat=chat)
    difference = (merged_logits - reference).abs().max().item()
    relative = difference / reference.abs().max().item()
    answers_adapter = generate(adapter_model, tokenizer, prompts, chat=chat)
    answers_merged = generate(merged_model, tokenizer, prompts, chat=chat)
    same = sum(a == b for a, b in zip(answers_adapter, answers_merged)) / len(prompts)
    prompt_ids = encode_prompt(tokenizer, prompts[0], chat=chat)
    rows = []
    for label, model, load in (("adapter (PeftModel)", adapter_model, load_adapter_model),
                               ("merged (merge_and_unload)", merged_model, load_merged_model)):
        cold, fresh = cold_start(load, tokenizer, prompt_ids)
        del fresh
        rows.append({"model": label, "ms per token": 1000 * seconds_per_token(model, tokenizer, prompt_ids,
                                                                              new_tokens=new_tokens),
                     "model MiB": model_bytes(model) / 2**20, "cold start s": cold})
    tolerance = merge_tolerance(base_dtype(merged_model))
    return {"rows": rows, "max logit difference": difference, "relative difference": relative,
            "tolerance": tolerance, "within tolerance": relative <= tolerance, "same greedy answers": same}


@torch.no_grad()
def generate_mixed(model: Any, tokenizer: Any, prompts: Sequence[str], adapter_names: Sequence[str], *,
                   chat: bool | None = None, max_new_tokens: int = 12) -> list[str]:
    """One batch, one base model, a different adapter per row (``"__base__"``: none): PEFT's mixed-batch inference."""
    ids, mask = metrics.left_pad([encode_prompt(tokenizer, p, chat=chat) for p in prompts], tokenizer.pad_token_id)
    device = next(model.parameters()).device
    stops = stop_ids(tokenizer, chat=chat)
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                         generation_config=metrics.greedy_config(max_new_tokens, stops, tokenizer.pad_token_id),
                         adapter_names=list(adapter_names))
    return [tokenizer.decode(metrics.cut_at_stop(row, stops), skip_special_tokens=True)
            for row in out[:, ids.shape[1]:].tolist()]


def tenancy_table(models: dict[str, tuple[float, float]], tenants: Sequence[int] = (1, 10, 100)) -> list[dict[str, Any]]:
    """GiB to serve N fine-tuned variants: N merged copies, or one base plus N adapters.

    ``models`` maps a label to ``(base bytes, adapter bytes)``. Weights only: KV cache and activations come on top.
    """
    rows = []
    for label, (base_bytes, adapter_bytes) in models.items():
        for n in tenants:
            rows.append({"model": label, "fine-tuned variants": n, "N merged copies": human_bytes(n * base_bytes),
                         "one base + N adapters": human_bytes(base_bytes + n * adapter_bytes),
                         "adapter / base": f"{adapter_bytes / base_bytes:.2%}"})
    return rows
