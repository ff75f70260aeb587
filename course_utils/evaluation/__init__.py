"""Evaluation floor: how a harness scores (log-likelihood choices, standard errors) and preference tuning (DPO)."""
