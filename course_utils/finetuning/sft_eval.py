"""Evaluating a fine-tuned model: greedy answers to held-out prompts, scored; logits; each answer token's probability.

Prompts are formatted by :func:`course_utils.finetuning.sft_data.encode_prompt`, exactly as TRL formatted them for training (a
plain prompt, or the chat template's user turn); :mod:`course_utils.finetuning.metrics` generates greedily and scores.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from course_utils.finetuning import metrics
from course_utils.finetuning.sft_data import IGNORE_INDEX, encode_prompt, stop_ids


def generate(model: Any, tokenizer: Any, prompts: Sequence[str], *, chat: bool | None = None,
             max_new_tokens: int = 16, batch_size: int = 32) -> list[str]:
    """Greedy answers to raw prompts, formatted exactly as in training (chat template or plain)."""
    ids = [encode_prompt(tokenizer, p, chat=chat) for p in prompts]
    return metrics.generate(model, tokenizer, ids, max_new_tokens=max_new_tokens, batch_size=batch_size,
                            stop_ids=stop_ids(tokenizer, chat=chat))


@dataclass
class Evaluation:
    """Generated answers beside their references, and the scores from :func:`metrics.score`."""

    prompts: list[str]
    references: list[str]
    predictions: list[str]
    scores: dict[str, float]
    seconds: float


def evaluate_generation(model: Any, tokenizer: Any, rows: Any, *, chat: bool | None = None,
                        max_new_tokens: int | None = None, batch_size: int = 32, prompt_field: str = "prompt",
                        completion_field: str = "completion") -> Evaluation:
    """Answer every row's prompt greedily and score the answers against its completion."""
    prompts = [row[prompt_field] for row in rows]
    references = [row[completion_field] for row in rows]
    if max_new_tokens is None:  # room for the longest reference and a few tokens more
        longest = max(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in references)
        max_new_tokens = longest + 4
    start = time.perf_counter()
    predictions = generate(model, tokenizer, prompts, chat=chat, max_new_tokens=max_new_tokens,
                           batch_size=batch_size)
    seconds = time.perf_counter() - start
    return Evaluation(prompts, references, predictions, metrics.score(predictions, references), seconds)


@torch.no_grad()
def logits_on(model: Any, tokenizer: Any, prompts: Sequence[str], *, chat: bool | None = None) -> torch.Tensor:
    """The model's logits (float32, on the CPU) for a left-padded batch of prompts, padding positions zeroed."""
    ids, mask = metrics.left_pad([encode_prompt(tokenizer, p, chat=chat) for p in prompts], tokenizer.pad_token_id)
    device = next(model.parameters()).device
    model.eval()
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().cpu()
    return logits * mask[..., None]


@torch.no_grad()
def answer_token_probabilities(model: Any, tokenizer: Any, example: dict[str, Sequence[int]]) -> list[dict[str, Any]]:
    """For each answer token of a tokenized example: the probability the model gives it, and its greedy choice."""
    device = next(model.parameters()).device
    ids = torch.tensor([list(example["input_ids"])], device=device)
    was_training = model.training
    model.eval()
    probabilities = torch.softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    model.train(was_training)
    rows = []
    for position, label in enumerate(example["labels"][1:]):
        if label == IGNORE_INDEX:
            continue
        best = int(probabilities[position].argmax())
        rows.append({"token": tokenizer.convert_ids_to_tokens(int(label)),
                     "p(token)": float(probabilities[position, label]),
                     "greedy choice": tokenizer.convert_ids_to_tokens(best),
                     "right?": "yes" if best == label else "no"})
    return rows
