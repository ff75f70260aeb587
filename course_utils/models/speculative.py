"""Speculative decoding measured: a small draft model proposes tokens, the large model checks them all at once.

transformers calls it assisted generation: ``model.generate(..., assistant_model=draft)``. In each round the draft
generates a few tokens greedily with its own KV cache; the target model runs once over all of them, keeps the
longest prefix that matches its own greedy choices and adds one token of its own. Under greedy decoding the output
is exactly the target's own. This module counts what happens (forward passes of each model, hence rounds, proposed
and accepted draft tokens) with PyTorch forward hooks, and times both ways of generating.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from course_utils.models.kv_cache import SameTokensComparison
from course_utils.reporting import timing

# transformers' assisted generation calls the draft's generate() with a generation config *and* token limits, then
# warns about its own call ("Passing `generation_config` together with generation-related arguments is
# deprecated"); nothing in the caller's code can change that, so the measurement hides that one message.
_OWN_DEPRECATION = "Passing `generation_config` together with generation-related arguments"


class _HideAssistedSelfWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _OWN_DEPRECATION not in record.getMessage()


@contextlib.contextmanager
def _quiet_assisted_generation() -> Iterator[None]:
    logger = logging.getLogger("transformers.generation.utils")
    hide = _HideAssistedSelfWarning()
    logger.addFilter(hide)
    try:
        yield
    finally:
        logger.removeFilter(hide)


@contextlib.contextmanager
def counting_forward_calls(*models: torch.nn.Module) -> Iterator[list[int]]:
    """Count the forward passes of each model inside the block: ``with counting_forward_calls(a, b) as calls``."""
    calls = [0] * len(models)
    handles = [model.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
               for i, model in enumerate(models)]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def _greedy_kwargs(model: Any, prompt_ids: torch.Tensor, new_tokens: int) -> dict[str, Any]:
    """Exactly ``new_tokens`` greedy tokens: an end-of-text token does not stop the run."""
    pad = model.generation_config.pad_token_id
    return {"input_ids": prompt_ids, "attention_mask": torch.ones_like(prompt_ids), "do_sample": False,
            "max_new_tokens": new_tokens, "eos_token_id": None, "pad_token_id": 0 if pad is None else pad}


@contextlib.contextmanager
def _without_sampling_defaults(model: Any) -> Iterator[None]:
    """The model's generation defaults without its sampling settings, inside the block only.

    A checkpoint saved for sampling (``temperature``, ``top_k`` in ``generation_config.json``) makes assisted
    generation pass those settings on to the draft with ``do_sample=False``, and warn that they are ignored.
    """
    from transformers import GenerationConfig

    saved = model.generation_config
    model.generation_config = GenerationConfig(bos_token_id=saved.bos_token_id, eos_token_id=saved.eos_token_id,
                                               pad_token_id=saved.pad_token_id)
    try:
        yield
    finally:
        model.generation_config = saved


@dataclass(frozen=True)
class AssistedRun:
    """One generation by the target model, with or without a draft: what it produced, how often each model ran."""

    new_tokens: int
    target_calls: int
    draft_calls: int
    seconds: float  # one run, timed over the repeats
    sequences: torch.Tensor

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds

    @property
    def tokens_per_target_call(self) -> float:
        """New tokens for each forward pass of the target: 1 without a draft, more when drafts are accepted."""
        return self.new_tokens / self.target_calls

    @property
    def accepted(self) -> int:
        """Draft tokens the target kept: each round adds the accepted ones plus one token of the target's own."""
        return self.new_tokens - self.target_calls if self.draft_calls else 0

    @property
    def acceptance_rate(self) -> float:
        """Accepted draft tokens over proposed ones (NaN without a draft)."""
        return self.accepted / self.draft_calls if self.draft_calls else math.nan


@torch.no_grad()
def timed_generation(target: Any, prompt_ids: torch.Tensor, new_tokens: int, *, draft: Any = None,
                     repeats: int = 3) -> AssistedRun:
    """Greedy generation of ``new_tokens`` by ``target`` (with ``draft`` as its assistant when given), timed over
    ``repeats`` runs after the timer's warm-ups; the forward passes counted on one more run."""
    if prompt_ids.shape[0] != 1:
        raise ValueError(f"Assisted generation takes one sequence at a time; got a batch of {prompt_ids.shape[0]}. "
                         "Pass prompt_ids[:1].")
    kwargs = _greedy_kwargs(target, prompt_ids, new_tokens)
    if draft is not None:
        kwargs["assistant_model"] = draft
    counted = [target] if draft is None else [target, draft]
    with _quiet_assisted_generation(), _without_sampling_defaults(target):
        seconds = timing.seconds_per_call(lambda: target.generate(**kwargs), repeats)
        with counting_forward_calls(*counted) as counts:
            sequences = target.generate(**kwargs)
        calls = (counts[0], counts[1] if draft is not None else 0)
    produced = sequences.shape[1] - prompt_ids.shape[1]
    return AssistedRun(produced, calls[0], calls[1], seconds, sequences)


@dataclass(frozen=True)
class DraftComparison(SameTokensComparison):
    """The target generating alone and with a draft model, on the same prompt."""

    alone: AssistedRun
    assisted: AssistedRun

    def plain_and_faster(self) -> tuple[AssistedRun, AssistedRun]:
        return self.alone, self.assisted

    def expected_speedup(self, draft_cost: float) -> float:
        """The speed-up the counts predict if one target pass over a round's tokens cost as much as a pass over one
        token, and a draft pass ``draft_cost`` of a target pass (e.g. the ratio of their tokens/s alone)."""
        draft_passes_per_round = self.assisted.draft_calls / self.assisted.target_calls
        return self.assisted.tokens_per_target_call / (1 + draft_passes_per_round * draft_cost)

    def summary(self, draft_cost: float) -> str:
        """What the counts and clocks say, in four lines; ``draft_cost`` is a draft pass as a share of a target
        pass (e.g. the target's tokens/s alone over the draft's)."""
        run = self.assisted
        return "\n".join([
            f"Same tokens with the draft as without: {'yes' if self.identical else 'NO'}.",
            f"The draft proposed {run.draft_calls} tokens and the target kept {run.accepted} ({run.acceptance_rate:.0%}):"
            f" {run.tokens_per_target_call:.2f} new tokens per target pass instead of 1.",
            f"Speed with the draft: {self.speedup:.2f}x the target's own ({run.tokens_per_s:,.0f} against "
            f"{self.alone.tokens_per_s:,.0f} tokens/s).",
            f"If a target pass over a round's tokens cost what a pass over one token costs, and a draft pass "
            f"{draft_cost:.0%} of a target pass, these counts would give {self.expected_speedup(draft_cost):.2f}x."])

    def rows(self) -> list[dict[str, Any]]:
        """The two runs as table rows."""
        rows = []
        for label, run in (("target alone", self.alone), ("target + draft", self.assisted)):
            rows.append({"generation": label, "new tokens": run.new_tokens, "target forward passes": run.target_calls,
                         "draft forward passes": run.draft_calls or "-",
                         "tokens per target pass": f"{run.tokens_per_target_call:.2f}",
                         "draft tokens accepted": (f"{run.accepted} of {run.draft_calls} "
                                                   f"({run.acceptance_rate:.0%})" if run.draft_calls else "-"),
                         "tokens/s": f"{run.tokens_per_s:,.0f}"})
        return rows


def compare_with_draft(target: Any, draft: Any, prompt_ids: torch.Tensor, new_tokens: int,
                       repeats: int = 3) -> DraftComparison:
    """Time ``target`` generating ``new_tokens`` greedily, alone and with ``draft`` as its assistant."""
    return DraftComparison(timed_generation(target, prompt_ids, new_tokens, repeats=repeats),
                           timed_generation(target, prompt_ids, new_tokens, draft=draft, repeats=repeats))
