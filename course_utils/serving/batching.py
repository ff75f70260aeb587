"""Static against continuous batching, on one workload, with one greedy decoder, on a simulated clock.

**Static batching** takes requests in arrival order in groups of ``batch_size``, waits until the group's last one
has arrived, and decodes the whole group until its longest answer is done: short answers wait for long ones, and
a request arriving meanwhile waits for the next group. **Continuous batching** (Orca's iteration-level scheduling)
decides again at every decoding step: it *admits* arrived requests while there is room in the batch, *steps*
every running sequence by one token, and *retires* the finished ones at once, so their places are free at the next
step. :func:`scheduler_step` is that core step; transformers has its own (``model.generate_batch``, the
``ContinuousBatchingManager`` of ``model.init_continuous_batching()``), with a paged KV cache behind it.

The clock is simulated so that a run takes no longer than its compute: it advances by the measured time of each
decoding step, and jumps to the next arrival when nothing is running (a real server would sit idle then).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from course_utils.serving.workload import Request, Timing

Decoder = Callable[[list[list[int]]], list[int]]


@dataclass
class Running:
    """A request being served: its ids so far (prompt, then generated) and the tokens generated."""

    request: Request
    ids: list[int]
    generated: list[int] = field(default_factory=list)

    @classmethod
    def start(cls, request: Request) -> Running:
        return cls(request, list(request.prompt_ids))

    @property
    def done(self) -> bool:
        return len(self.generated) >= self.request.max_new_tokens


def greedy_decoder(model: Any) -> Decoder:
    """The next greedy token of each sequence, from one left-padded forward pass over the batch (no KV cache)."""
    device = next(model.parameters()).device

    @torch.no_grad()
    def decode(batch: list[list[int]]) -> list[int]:
        width = max(len(ids) for ids in batch)
        input_ids = torch.zeros(len(batch), width, dtype=torch.long, device=device)
        mask = torch.zeros(len(batch), width, dtype=torch.long, device=device)
        for row, ids in enumerate(batch):
            input_ids[row, width - len(ids):] = torch.tensor(ids, device=device)
            mask[row, width - len(ids):] = 1
        positions = (mask.cumsum(-1) - 1).clamp_min(0)  # each sequence counts from 0 at its first real token
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions).logits[:, -1]
        return logits.argmax(-1).tolist()

    return decode


def scheduler_step(waiting: list[Request], running: list[Running], now: float, max_batch: int,
                   decode: Decoder) -> list[Running]:
    """One iteration: admit arrived requests while the batch has room, decode one token each, retire the finished.

    ``waiting`` is in arrival order; admitted requests leave it and join ``running`` (both lists change in place).
    Returns the sequences retired at this step.
    """
    while waiting and len(running) < max_batch and waiting[0].arrival_s <= now:
        running.append(Running.start(waiting.pop(0)))
    if running:
        for sequence, token in zip(running, decode([s.ids for s in running])):
            sequence.ids.append(token)
            sequence.generated.append(token)
    retired = [s for s in running if s.done]
    running[:] = [s for s in running if not s.done]
    return retired


Step = Callable[[list[Request], list[Running], float, int, Decoder], list[Running]]


def serve_continuous(requests: Sequence[Request], decode: Decoder, max_batch: int,
                     step: Step = scheduler_step) -> tuple[list[Timing], dict[int, list[int]]]:
    """Serve the workload with continuous batching (``step`` at each iteration): timings and generated tokens."""
    waiting, running = sorted(requests, key=lambda r: r.arrival_s), []
    clock, first, timings, outputs = 0.0, {}, [], {}
    while waiting or running:
        if not running and waiting[0].arrival_s > clock:
            clock = waiting[0].arrival_s  # idle until the next arrival
        start = time.perf_counter()
        retired = step(waiting, running, clock, max_batch, decode)
        clock += time.perf_counter() - start
        for sequence in [*running, *retired]:
            first.setdefault(sequence.request.request_id, clock)
        for sequence in retired:
            r = sequence.request
            timings.append(Timing(r.request_id, r.arrival_s, first[r.request_id], clock, len(sequence.generated)))
            outputs[r.request_id] = sequence.generated
    return sorted(timings, key=lambda t: t.request_id), outputs


def serve_static(requests: Sequence[Request], decode: Decoder,
                 batch_size: int) -> tuple[list[Timing], dict[int, list[int]]]:
    """Serve the workload in fixed groups, each decoded until its longest answer is done, answers returned together."""
    ordered = sorted(requests, key=lambda r: r.arrival_s)
    clock, timings, outputs = 0.0, [], {}
    for begin in range(0, len(ordered), batch_size):
        group = [Running.start(r) for r in ordered[begin:begin + batch_size]]
        clock = max(clock, group[-1].request.arrival_s)  # the group waits for its last member
        first = None
        for _ in range(max(s.request.max_new_tokens for s in group)):
            start = time.perf_counter()
            for sequence, token in zip(group, decode([s.ids for s in group])):
                sequence.ids.append(token)  # finished rows are still computed: the batch is padded to the longest
                if not sequence.done:
                    sequence.generated.append(token)
            clock += time.perf_counter() - start
            first = first if first is not None else clock
        for s in group:
            r = s.request
            timings.append(Timing(r.request_id, r.arrival_s, first, clock, len(s.generated)))
            outputs[r.request_id] = s.generated
    return sorted(timings, key=lambda t: t.request_id), outputs
