"""Text to tokens to batches: the sliding-window dataset and loaders used for pretraining."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset


def encode_documents(tokenizer, texts: Iterable[str], *, add_eos: bool = True) -> list[int]:
    """Concatenate documents into one token stream, each followed by the end-of-text token."""
    eos = tokenizer.eos_token_id
    if add_eos and eos is None:
        raise ValueError("The tokenizer has no eos_token_id; pass add_eos=False or set tokenizer.eos_token.")
    ids: list[int] = []
    for encoded in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        ids.extend(encoded)
        if add_eos:
            ids.append(eos)
    return ids


class SlidingWindowDataset(Dataset):
    """Windows of ``max_length`` tokens every ``stride`` tokens; targets are the inputs shifted by one."""

    def __init__(self, token_ids: Sequence[int] | torch.Tensor, max_length: int, stride: int | None = None):
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        stride = max_length if stride is None else stride
        if stride < 1:
            raise ValueError(f"stride must be at least 1, got {stride}")
        self.tokens = torch.as_tensor(token_ids, dtype=torch.long)
        if len(self.tokens) < max_length + 1:
            raise ValueError(
                f"Need at least max_length + 1 = {max_length + 1} tokens for one window, got {len(self.tokens)}"
            )
        self.max_length = max_length
        self.stride = stride
        self.starts = range(0, len(self.tokens) - max_length, stride)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.starts[index]
        window = self.tokens[start : start + self.max_length + 1]
        return window[:-1], window[1:]


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0, drop_last: bool = True,
                num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A DataLoader whose shuffling order depends only on ``seed`` (so runs and resumes reproduce)."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      num_workers=num_workers, pin_memory=pin_memory, generator=generator)


# ------------------------------------------------------------------------------------------- BPE, by hand
SPACE = "\u0120"  # "Ġ": how byte-level BPE (GPT-2, our tokenizer) shows the space in front of a word


def _words(texts: Iterable[str]) -> dict[tuple[str, ...], int]:
    """Word counts, each word as a tuple of characters, a leading space written as ``Ġ`` (byte-level style)."""
    import re

    counts: dict[tuple[str, ...], int] = {}
    for text in texts:
        for word in re.findall(r" ?[^\s]+", text):
            symbols = tuple(word.replace(" ", SPACE))
            counts[symbols] = counts.get(symbols, 0) + 1
    return counts


def _merge_word(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def learn_bpe_merges(texts: Iterable[str], n_merges: int) -> list[tuple[str, str, int]]:
    """The first ``n_merges`` BPE merges as ``(left, right, count)``: each time, fuse the most frequent pair.

    Ties go to the pair seen first, so the result is the same on every machine.
    """
    words = _words(texts)
    merges: list[tuple[str, str, int]] = []
    for _ in range(n_merges):
        pairs: dict[tuple[str, str], int] = {}
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] = pairs.get(pair, 0) + count
        if not pairs:
            break
        best = max(pairs, key=pairs.__getitem__)   # max keeps the first of equal counts: insertion order
        merges.append((best[0], best[1], pairs[best]))
        words = {_merge_word(word, best): count for word, count in words.items()}
    return merges


def apply_bpe_merges(text: str, merges: Sequence[tuple[str, str, int]] | Sequence[tuple[str, str]]) -> list[str]:
    """Split ``text`` into the pieces the merges produce, applying them in the order they were learned."""
    pieces: list[str] = []
    for word in _words([text]):
        for merge in merges:
            word = _merge_word(word, (merge[0], merge[1]))
        pieces.extend(word)
    return pieces


def bpe_merge_steps(texts: Sequence[str], n_merges: int, example: str) -> list[dict[str, object]]:
    """A table: after each merge, the pair fused, its count, and how ``example`` is split (one word per row)."""
    merges = learn_bpe_merges(texts, n_merges)
    rows = [{"merge": 0, "pair": "(characters)", "count": "", "example split": " ".join(apply_bpe_merges(example, []))}]
    for i, (left, right, count) in enumerate(merges, start=1):
        rows.append({"merge": i, "pair": f"{left} + {right}", "count": count,
                     "example split": " ".join(apply_bpe_merges(example, merges[:i]))})
    return rows


def tokenizer_merges(tokenizer, n: int | None = None) -> list[tuple[str, str]]:
    """The merges a trained Hugging Face BPE tokenizer learned, in order (the first ``n``)."""
    import json

    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return merges[:n] if n is not None else merges


def token_pieces(tokenizer, text: str) -> list[tuple[int, str]]:
    """``(id, piece)`` for each token of ``text``, the pieces shown as the tokenizer stores them (``Ġ`` = space)."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    return list(zip(ids, tokenizer.convert_ids_to_tokens(ids)))
