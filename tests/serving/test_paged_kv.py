"""course_utils.serving.paged_kv: blocks are handed out when needed and all come back."""

import pytest

from course_utils.serving import paged_kv


def test_append_token_takes_a_block_every_block_size_tokens():
    allocator, table, length = paged_kv.BlockAllocator(8), [], 0
    for _ in range(9):
        length = paged_kv.append_token(table, length, allocator.free_blocks, 4)
    assert table == [0, 1, 2] and allocator.used == 3
    assert paged_kv.slot_of(table, 8, 4) == 8 and paged_kv.slot_of([5, 2], 5, 4) == 9
    paged_kv.release(table, allocator.free_blocks)
    assert table == [] and allocator.used == 0


def test_allocator_refuses_when_full_and_double_free():
    allocator = paged_kv.BlockAllocator(1)
    block = allocator.allocate()
    with pytest.raises(MemoryError):
        allocator.allocate()
    allocator.free(block)
    with pytest.raises(ValueError):
        allocator.free(block)


def test_reservation_waste():
    r = paged_kv.reservation([5, 12, 3], max_length=16, block_size=4)
    assert r["used slots"] == 20 and r["contiguous slots"] == 48 and r["paged slots"] == 8 + 12 + 4
    assert r["contiguous waste"] == pytest.approx(1 - 20 / 48) and r["paged waste"] == pytest.approx(1 - 20 / 24)
    assert paged_kv.reservation([5, 12, 3], 16, 1)["paged waste"] == 0
