"""Preference tuning: pairs built from the workbook's data, the DPO loss written out, and what it moves.

A preference pair is a prompt with a chosen and a rejected answer. DPO (Rafailov et al., 2023) trains the policy
so that, measured against a frozen reference model, the chosen answer gains log-probability relative to the
rejected one; ``beta (log pi(y|x) - log pi_ref(y|x))`` is each answer's implicit reward.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean DPO loss -log sigmoid(beta (chosen log-ratio - rejected log-ratio)) and the two implicit rewards."""
    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean(), chosen_rewards, rejected_rewards


def corrupt(answer: str, vocabulary: Sequence[str], rng: random.Random) -> str:
    """The answer with one of its words (not the closing one) replaced by another word of ``vocabulary``."""
    words = answer.split()
    position = rng.randrange(max(1, len(words) - 1))
    words[position] = rng.choice([word for word in vocabulary if word != words[position]])
    return " " + " ".join(words)


def preference_pairs(rows: Sequence[Mapping[str, str]], vocabulary: Sequence[str], seed: int = 0,
                     noisy_share: float = 0.0) -> list[dict[str, str]]:
    """One pair per row: the right translation chosen, a one-word mistranslation rejected.

    A ``noisy_share`` of the pairs (chosen by the seed) has the two swapped: labels a careless annotator got wrong.
    """
    rng = random.Random(seed)
    pairs = []
    for row in rows:
        chosen, rejected = row["completion"], corrupt(row["completion"], vocabulary, rng)
        if rng.random() < noisy_share:
            chosen, rejected = rejected, chosen
        pairs.append({"prompt": row["prompt"], "chosen": chosen, "rejected": rejected})
    return pairs


def sequence_logps(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   completion_mask: torch.Tensor) -> torch.Tensor:
    """Per row, the summed log-probability of the tokens where ``completion_mask`` is 1 (TRL's batch layout)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    targets = input_ids[:, 1:]
    token_logps = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)
    return (token_logps * completion_mask[:, 1:]).sum(dim=1)


def pair_batch(tokenizer: Any, pairs: Sequence[Mapping[str, str]]) -> dict[str, torch.Tensor]:
    """Chosen rows then rejected rows, right-padded, with the completion mask (the layout DPOTrainer builds).

    Each answer ends with the end-of-text token, as TRL appends it; the prompt's tokens are masked out.
    """
    rows = []
    for side in ("chosen", "rejected"):
        for pair in pairs:
            prompt = tokenizer(pair["prompt"], add_special_tokens=False)["input_ids"]
            whole = tokenizer(pair["prompt"] + pair[side] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
            rows.append((whole, [0] * len(prompt) + [1] * (len(whole) - len(prompt))))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    return {"input_ids": torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows]),
            "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows]),
            "completion_mask": torch.tensor([mask + [0] * (width - len(mask)) for _, mask in rows])}


@torch.no_grad()
def pair_logps(model: Any, tokenizer: Any, pairs: Sequence[Mapping[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's summed log-probability of each pair's chosen and rejected answer."""
    batch = {key: value.to(model.device) for key, value in pair_batch(tokenizer, pairs).items()}
    return sequence_logps(model, **batch).cpu().chunk(2)


def preference_metrics(policy: Any, reference: Any, tokenizer: Any, pairs: Sequence[Mapping[str, str]],
                       beta: float) -> dict[str, Any]:
    """On held-out pairs: how often the policy prefers the chosen answer, and its implicit rewards.

    ``prefers chosen`` per pair (1 where log pi(chosen) > log pi(rejected)); ``margin`` per pair, the chosen reward
    minus the rejected one (0 for the reference itself); ``distance``, the mean of |log pi - log pi_ref| over both
    answers, how far the policy has moved from the reference on these texts.
    """
    chosen, rejected = pair_logps(policy, tokenizer, pairs)
    ref_chosen, ref_rejected = pair_logps(reference, tokenizer, pairs)
    _, chosen_rewards, rejected_rewards = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta)
    distance = torch.cat([chosen - ref_chosen, rejected - ref_rejected]).abs().mean()
    return {"prefers chosen": (chosen > rejected).float().tolist(),
            "margin": (chosen_rewards - rejected_rewards).tolist(), "distance": float(distance)}
