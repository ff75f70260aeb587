"""The paged KV cache: fixed-size blocks, a free list, one block table per sequence, and what each layout wastes.

A contiguous cache reserves, for every sequence, room for the longest sequence it might become (the model's or the
server's maximum length), because it cannot grow in place. A paged cache (vLLM's PagedAttention) cuts the cache into
blocks of ``block_size`` token slots and gives a sequence a new block only when its last one is full; a sequence's
*block table* maps its logical blocks to physical ones, anywhere in memory. The waste is then the unfilled part of
each sequence's last block, at most ``block_size - 1`` slots per sequence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


class BlockAllocator:
    """Physical blocks ``0 .. num_blocks - 1`` and the free list they are handed out from."""

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.free_blocks: list[int] = list(range(num_blocks - 1, -1, -1))  # pop() hands out block 0 first

    def allocate(self) -> int:
        if not self.free_blocks:
            raise MemoryError(f"all {self.num_blocks} KV blocks are in use: a request must wait or be preempted")
        return self.free_blocks.pop()

    def free(self, block: int) -> None:
        if block in self.free_blocks or not 0 <= block < self.num_blocks:
            raise ValueError(f"block {block} is not allocated")
        self.free_blocks.append(block)

    @property
    def used(self) -> int:
        return self.num_blocks - len(self.free_blocks)


def append_token(block_table: list[int], length: int, free_blocks: list[int], block_size: int) -> int:
    """Make room for one more token of a sequence of ``length`` tokens: a new block when the last one is full."""
    if length % block_size == 0:  # no block yet, or the last one is full
        if not free_blocks:
            raise MemoryError("no free KV block left")
        block_table.append(free_blocks.pop())
    return length + 1


def release(block_table: list[int], free_blocks: list[int]) -> None:
    """Give every block of a finished sequence back to the free list."""
    while block_table:
        free_blocks.append(block_table.pop())


def slot_of(block_table: Sequence[int], position: int, block_size: int) -> int:
    """The physical slot of token ``position``: its block from the table, then the offset inside the block."""
    return block_table[position // block_size] * block_size + position % block_size


def reservation(lengths: Sequence[int], max_length: int, block_size: int) -> dict[str, float]:
    """Token slots used, reserved contiguously (``max_length`` each) and reserved in blocks, and the wasted shares."""
    used = sum(lengths)
    contiguous = len(lengths) * max_length
    paged = sum(math.ceil(n / block_size) * block_size for n in lengths)
    return {"block size": block_size, "used slots": used, "contiguous slots": contiguous, "paged slots": paged,
            "contiguous waste": 1 - used / contiguous, "paged waste": 1 - used / paged}
