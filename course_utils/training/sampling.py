"""Choosing the next token: greedy, temperature, top-k and multinomial sampling, and the generation loop.

A language model gives a score (logit) to every token in the vocabulary. Turning scores into one token:

* greedy: take the highest score (``argmax``); the same text every time;
* temperature: divide the logits by ``T`` before the softmax; ``T < 1`` sharpens, ``T > 1`` flattens;
* top-k: keep only the ``k`` highest logits, the rest get probability zero;
* multinomial: draw one token with the resulting probabilities (``torch.multinomial``), seeded to reproduce.

``probs_fn`` (in :func:`next_token` and the functions that call it) replaces :func:`next_token_probs` for one row of
logits, with its signature ``probs_fn(logits, temperature, top_k)``: notebook 03 samples with the student's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from course_utils.reporting.stored_outputs import readable  # noqa: F401 - sampling.readable(text) for the page
from course_utils.training.train import logits_of

ProbsFn = Callable[[torch.Tensor, float, "int | None"], torch.Tensor]  # one row of logits -> its probabilities


def softmax_with_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(logits / temperature)`` over the last dimension; ``temperature`` must be positive."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (use greedy decoding for 'temperature 0'), got {temperature}")
    return torch.softmax(logits / temperature, dim=-1)


def top_k_filter(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """``logits`` with everything below the k-th largest set to ``-inf`` (None or k >= vocab: unchanged)."""
    if k is None or k >= logits.size(-1):
        return logits
    if k < 1:
        raise ValueError(f"top_k must be at least 1, got {k}")
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def next_token_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None) -> torch.Tensor:
    """The probabilities sampling draws from: top-k filter, then softmax with temperature."""
    return softmax_with_temperature(top_k_filter(logits, top_k), temperature)


def next_token(logits: torch.Tensor, *, temperature: float = 0.0, top_k: int | None = None,
               generator: torch.Generator | None = None, probs_fn: ProbsFn | None = None) -> torch.Tensor:
    """One token id per row of ``logits`` (shape ``(batch, vocab)``): greedy when ``temperature == 0``."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    if probs_fn is None:
        probs = next_token_probs(logits.float(), temperature, top_k)
    else:  # row by row: the exercise's function takes one vector of logits
        probs = torch.stack([probs_fn(row, temperature, top_k) for row in logits.float()])
    return torch.multinomial(probs, num_samples=1, generator=generator)


@torch.no_grad()
def generate(model: torch.nn.Module, ids: torch.Tensor, max_new_tokens: int, *, context_length: int,
             temperature: float = 0.0, top_k: int | None = None, eos_id: int | None = None,
             generator: torch.Generator | None = None, probs_fn: ProbsFn | None = None) -> torch.Tensor:
    """Append up to ``max_new_tokens`` tokens to ``ids`` (batch, time), one forward pass per token.

    The model sees at most the last ``context_length`` tokens. Generation stops early when every row has
    produced ``eos_id``. There is no KV cache: each step recomputes the whole window (simple, fine when small).
    """
    was_training = model.training
    model.eval()
    finished = torch.zeros(ids.size(0), dtype=torch.bool, device=ids.device)
    for _ in range(max_new_tokens):
        logits = logits_of(model(ids[:, -context_length:]))[:, -1, :]
        token = next_token(logits, temperature=temperature, top_k=top_k, generator=generator, probs_fn=probs_fn)
        ids = torch.cat([ids, token], dim=1)
        if eos_id is not None:
            finished |= token.squeeze(1) == eos_id
            if bool(finished.all()):
                break
    model.train(was_training)
    return ids


def generate_text(model: torch.nn.Module, tokenizer: Any, prompt: str, max_new_tokens: int = 40, *,
                  temperature: float = 0.0, top_k: int | None = None, seed: int | None = None,
                  context_length: int | None = None, probs_fn: ProbsFn | None = None) -> str:
    """Continue ``prompt`` and return the decoded text (prompt included), stopping at end-of-text."""
    device = next(model.parameters()).device
    ids = torch.tensor([tokenizer.encode(prompt, add_special_tokens=False)], device=device)
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    context_length = context_length or _context_length(model)
    out = generate(model, ids, max_new_tokens, context_length=context_length, temperature=temperature,
                   top_k=top_k, eos_id=tokenizer.eos_token_id, generator=generator, probs_fn=probs_fn)
    return tokenizer.decode(out[0], skip_special_tokens=True)


def _context_length(model: torch.nn.Module) -> int:
    cfg = getattr(model, "cfg", None) or getattr(model, "config", None)
    for name in ("context_length", "n_positions", "max_position_embeddings"):
        if cfg is not None and getattr(cfg, name, None):
            return int(getattr(cfg, name))
    raise ValueError("Cannot tell the model's context length: pass context_length=...")


def temperature_table(logits: Sequence[float], temperatures: Sequence[float],
                      labels: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per temperature: the probability of each entry of a small logit vector (for a table)."""
    values = torch.tensor(logits, dtype=torch.float64)
    labels = list(labels) if labels is not None else [f"token {i}" for i in range(len(values))]
    rows = []
    for t in temperatures:
        probs = softmax_with_temperature(values, t)
        rows.append({"temperature": t, **{label: round(p.item(), 4) for label, p in zip(labels, probs)}})
    return rows


def multinomial_counts(probs: Sequence[float], draws: int, seed: int = 0) -> list[int]:
    """How often each index comes out of ``draws`` seeded ``torch.multinomial`` draws."""
    generator = torch.Generator().manual_seed(seed)
    picks = torch.multinomial(torch.tensor(probs, dtype=torch.float), draws, replacement=True, generator=generator)
    return torch.bincount(picks, minlength=len(probs)).tolist()


DEFAULT_SETTINGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("greedy", {"temperature": 0.0}),
    ("T=0.7", {"temperature": 0.7}),
    ("T=1.0", {"temperature": 1.0}),
    ("T=1.5", {"temperature": 1.5}),
    ("T=1.0, top-k 5", {"temperature": 1.0, "top_k": 5}),
    ("T=1.5, top-k 5", {"temperature": 1.5, "top_k": 5}),
)


def sampling_table(model: torch.nn.Module, tokenizer: Any, prompt: str, *, max_new_tokens: int = 30,
                   settings: Sequence[tuple[str, dict[str, Any]]] = DEFAULT_SETTINGS, seeds: Sequence[int] = (0,),
                   probs_fn: ProbsFn | None = None) -> list[dict[str, Any]]:
    """The same prompt continued under each setting and seed: a side-by-side table of generations."""
    rows = []
    for name, kwargs in settings:
        for seed in seeds:
            text = generate_text(model, tokenizer, prompt, max_new_tokens, seed=seed, probs_fn=probs_fn, **kwargs)
            continuation = readable(text[len(prompt):].replace("\n", " "))  # random bytes: no bell on the page
            rows.append({"setting": name, "seed": seed, "continuation": continuation})
    return rows
