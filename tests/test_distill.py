"""The distillation loss and the every-other-layer student initialisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_utils.distill import distillation_loss, init_student_from_teacher


def _manual(student, teacher, labels, alpha, temperature):
    s, t = student.reshape(-1, student.shape[-1]), teacher.reshape(-1, teacher.shape[-1])
    p_t = F.softmax(t / temperature, -1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / temperature, -1))).sum(-1).mean()
    ce = F.cross_entropy(s, labels.reshape(-1))
    return (1 - alpha) * ce + alpha * temperature**2 * kl


@pytest.mark.parametrize(("alpha", "temperature"), [(0.0, 1.0), (0.5, 2.0), (0.9, 4.0), (1.0, 3.0)])
def test_matches_the_formula(alpha, temperature):
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 11, generator=g), torch.randn(2, 5, 11, generator=g)
    labels = torch.randint(0, 11, (2, 5), generator=g)
    got = distillation_loss(student, teacher, labels, alpha=alpha, temperature=temperature)
    assert got.item() == pytest.approx(_manual(student, teacher, labels, alpha, temperature).item(), rel=1e-5)


def test_zero_when_student_equals_teacher_and_alpha_is_one():
    logits = torch.randn(3, 7)
    assert distillation_loss(logits, logits.clone(), None, alpha=1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_masked_positions_are_ignored():
    student, teacher = torch.randn(1, 4, 6), torch.randn(1, 4, 6)
    labels = torch.tensor([[1, 2, -100, -100]])
    full = distillation_loss(student[:, :2], teacher[:, :2], labels[:, :2])
    assert distillation_loss(student, teacher, labels).item() == pytest.approx(full.item(), rel=1e-6)


def test_vocabularies_must_match():
    with pytest.raises(ValueError, match="share one vocabulary.*12.*10"):
        distillation_loss(torch.randn(2, 10), torch.randn(2, 12), torch.tensor([0, 1]))


@pytest.mark.parametrize(("alpha", "temperature"), [(-0.1, 1.0), (1.5, 1.0), (0.5, 0.0)])
def test_bad_hyperparameters(alpha, temperature):
    with pytest.raises(ValueError):
        distillation_loss(torch.randn(2, 4), torch.randn(2, 4), torch.tensor([0, 1]), alpha=alpha,
                          temperature=temperature)


def test_student_takes_every_other_layer():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    teacher = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                           num_attention_heads=4, num_key_value_heads=2))
    student = init_student_from_teacher(teacher, 2)
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    for kept, original in zip(student.model.layers, [teacher.model.layers[1], teacher.model.layers[3]]):
        torch.testing.assert_close(kept.mlp.up_proj.weight, original.mlp.up_proj.weight)
    ids = torch.randint(0, 50, (1, 6))
    assert student(ids).logits.shape == (1, 6, 50)
    assert student.generate(ids, max_new_tokens=3, do_sample=False).shape == (1, 9)
    with pytest.raises(ValueError, match="between 1 and"):
        init_student_from_teacher(teacher, 5)
