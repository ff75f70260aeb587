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
