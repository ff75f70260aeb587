"""Training: from text to a trained model (data, the loop, sampling, speed, scaling, DDP, distillation)."""
