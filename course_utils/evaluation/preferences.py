"""Preference tuning: the DPO loss written out, with the implicit rewards it compares."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean DPO loss -log sigmoid(beta (chosen log-ratio - rejected log-ratio)) and the two implicit rewards."""
    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean(), chosen_rewards, rejected_rewards
