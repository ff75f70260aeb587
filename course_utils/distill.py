"""Knowledge distillation: the soft-target loss and the DistilBERT-style student initialisation."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None,
                      *, alpha: float = 0.5, temperature: float = 2.0) -> torch.Tensor:
    """``(1 - alpha) * CE(student, labels) + alpha * T^2 * KL(teacher_T || student_T)``, averaged over tokens.

    Both logit tensors are ``(..., vocab)``; labels equal to -100 are ignored by both terms. The ``T^2`` factor
    keeps the soft term's gradients on the same scale as the hard term's when ``T`` changes (Hinton et al., 2015).
    """
    if student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise ValueError(
            f"Teacher and student must share one vocabulary: the teacher scores {teacher_logits.shape[-1]} tokens, "
            f"the student {student_logits.shape[-1]}. Use a student with the teacher's tokenizer (or map the "
            f"vocabularies first)."
        )
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"Logit shapes differ: student {tuple(student_logits.shape)}, "
                         f"teacher {tuple(teacher_logits.shape)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    vocab = student_logits.shape[-1]
    s = student_logits.reshape(-1, vocab).float()
    t = teacher_logits.reshape(-1, vocab).float()
    keep = torch.ones(s.shape[0], dtype=torch.bool, device=s.device)
    if labels is not None:
        keep = labels.reshape(-1) != -100
    log_p_student = F.log_softmax(s[keep] / temperature, dim=-1)
    log_p_teacher = F.log_softmax(t[keep] / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    soft = temperature**2 * kl
    if alpha == 1.0:
        return soft
    if labels is None:
        raise ValueError("labels are needed for the hard-label term; pass them, or alpha=1.0 for soft targets only")
    hard = F.cross_entropy(s, labels.reshape(-1), ignore_index=-100)
    return (1.0 - alpha) * hard + alpha * soft


def init_student_from_teacher(teacher: torch.nn.Module, num_layers: int) -> torch.nn.Module:
    """A student with ``num_layers`` decoder layers copied from the teacher at evenly spaced depths.

    With half the teacher's layers this is the DistilBERT trick (one layer out of every two). Embeddings, the
    final norm and the LM head are copied too. Works for transformers decoder models that keep their layers in
    ``model.model.layers`` (Llama, Mistral, Qwen2, ...).
    """
    layers = teacher.model.layers
    if not 1 <= num_layers <= len(layers):
        raise ValueError(f"num_layers must be between 1 and the teacher's {len(layers)}, got {num_layers}")
    step = len(layers) / num_layers
    keep = [int(i * step + step - 1) for i in range(num_layers)]  # the last layer of each group
    student = copy.deepcopy(teacher)
    student.model.layers = torch.nn.ModuleList(copy.deepcopy(layers[i]) for i in keep)
    for new_index, layer in enumerate(student.model.layers):
        if hasattr(layer, "self_attn") and hasattr(layer.self_attn, "layer_idx"):
            layer.self_attn.layer_idx = new_index  # the KV cache is indexed by layer
    student.config.num_hidden_layers = num_layers
    if getattr(student.config, "layer_types", None) is not None:
        student.config.layer_types = [student.config.layer_types[i] for i in keep]
    return student
