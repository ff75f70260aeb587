"""How a harness scores multiple choice: sum of log-probabilities per choice, normalisations, bootstrap errors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def pick_choice(logprobs: Sequence[float], choices: Sequence[str], norm: str = "none") -> int:
    """Index of the best choice: raw sum of log-probabilities, or divided by characters ("chars", lm-eval's acc_norm)."""
    if norm == "chars":
        scores = [lp / max(1, len(text)) for lp, text in zip(logprobs, choices, strict=True)]
    elif norm == "none":
        scores = list(logprobs)
    else:
        raise ValueError(f"norm must be 'none' or 'chars', got {norm!r}")
    return int(np.argmax(scores))


def bootstrap_stderr(values: Sequence[float], resamples: int = 1000, seed: int = 0) -> float:
    """Standard error of the mean of ``values`` by resampling the items with replacement."""
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    return float(means.std(ddof=1))


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean of a - b over the same items and its standard error (pairing removes the items' own difficulty)."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))


def continuation_logprob(model: Any, tokenizer: Any, context: str, continuation: str) -> float:
    """Sum of log p(token | everything before it) over the continuation's tokens, as lm-eval computes it.

    The text is encoded whole and split where the context's own tokens end (so that a token that spans the
    boundary is not split in two), and the model reads all but the last token once.
    """
    import torch

    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    n_context = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    ids = torch.tensor([whole], device=model.device)
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids[:, :-1]).logits.float(), dim=-1)[0]
    targets = ids[0, n_context:]
    return float(logprobs[n_context - 1:].gather(-1, targets[:, None]).sum())


def choice_logprobs(model: Any, tokenizer: Any, context: str, choices: Sequence[str]) -> list[float]:
    """:func:`continuation_logprob` of every choice after one context, in one padded forward pass."""
    import torch

    n_context = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    rows = [tokenizer(context + choice, add_special_tokens=False)["input_ids"] for choice in choices]
    width = max(len(row) for row in rows)
    ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in rows], device=model.device)
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows], device=model.device)
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids[:, :-1], attention_mask=mask[:, :-1]).logits.float(), dim=-1)
    token_logprobs = logprobs.gather(-1, ids[:, 1:, None]).squeeze(-1)
    return [float(token_logprobs[i, n_context - 1:len(row) - 1].sum()) for i, row in enumerate(rows)]
