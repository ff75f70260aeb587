"""course_utils.checks.nb07: each check passes a right answer and fails, with a useful message, on wrong ones."""

from __future__ import annotations

import math

import pytest
from reference_copies import references

from course_utils.checks import CheckFailed, DelegationError, nb07
from course_utils.serving import batching as batching_module
from course_utils.serving import paged_kv as paged_kv_module
from course_utils.serving import workload as workload_module

batching, paged_kv, workload = (references(m) for m in (batching_module, paged_kv_module, workload_module))


def _stub(*args, **kwargs):
    raise NotImplementedError()


def test_percentile_passes(capsys):
    nb07.percentile(workload.percentile)
    assert "percentile" in capsys.readouterr().out


def _nearest(values, q):
    ordered = sorted(values)
    return ordered[round((len(ordered) - 1) * q / 100)]


def _unsorted(values, q):
    position = (len(values) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return values[low] + (values[high] - values[low]) * (position - low)


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"), (_nearest, "nearest"), (_unsorted, "expected about"),
    (lambda v, q: sorted(v)[int(len(v) * q / 100) - 1], "percentile"),
])
def test_percentile_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb07.percentile(wrong)


def test_append_token_passes():
    nb07.append_token(paged_kv.append_token)


def _always_new_block(table, length, free, block_size):
    table.append(free.pop())
    return length + 1


def _off_by_one(table, length, free, block_size):
    if length % block_size == 1 or length == 0:
        table.append(free.pop())
    return length + 1


def _copy_block(table, length, free, block_size):
    if length % block_size == 0:
        table.append(free[-1])
    return length + 1


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"), (_always_new_block, "blocks where"), (_off_by_one, "block"),
    (_copy_block, "free list"), (lambda t, n, f, b: paged_kv.append_token(t, n, f, b) - 1, "returned length"),
])
def test_append_token_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb07.append_token(wrong)


def test_release_passes(capsys):
    nb07.release(paged_kv.release)
    assert "all 32 blocks" in capsys.readouterr().out


def _leaks_last_block(table, free):  # the notebook's buggy version
    for block in table[:-1]:
        free.append(block)
    table.clear()


def _keeps_table(table, free):
    free.extend(table)


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"), (_leaks_last_block, "never freed"), (_keeps_table, "still lists"),
    (lambda t, f: t.clear(), "came back"),
])
def test_release_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb07.release(wrong)


def test_scheduler_step_passes(capsys):
    nb07.scheduler_step(batching.scheduler_step)
    assert "admits" in capsys.readouterr().out


def _ignores_arrival(waiting, running, now, max_batch, decode):
    while waiting and len(running) < max_batch:
        running.append(batching_module.Running.start(waiting.pop(0)))
    return batching.scheduler_step(waiting, running, now, max_batch, decode)


def _one_at_a_time(waiting, running, now, max_batch, decode):
    while waiting and len(running) < max_batch and waiting[0].arrival_s <= now:
        running.append(batching_module.Running.start(waiting.pop(0)))
    for s in running:
        token = decode([s.ids])[0]
        s.ids.append(token)
        s.generated.append(token)
    retired = [s for s in running if s.done]
    running[:] = [s for s in running if not s.done]
    return retired


def _never_retires(waiting, running, now, max_batch, decode):
    batching.scheduler_step(waiting, running, now, max_batch + 100, decode)
    return []


def _library(waiting, running, now, max_batch, decode):
    from transformers.generation.continuous_batching import ContinuousBatchingManager
    ContinuousBatchingManager(None, None)
    return []


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"), (_ignores_arrival, "arrives at 5.0"), (_one_at_a_time, "batches of"),
    (_never_retires, "batches of|retired"), (_library, "ContinuousBatchingManager"),
    (batching_module.scheduler_step, "workbook's own answer"),
])
def test_scheduler_step_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb07.scheduler_step(wrong)


def test_scheduler_step_refusal_is_a_delegation_error():
    with pytest.raises(DelegationError):
        nb07.scheduler_step(batching_module.scheduler_step)
