"""The distillation loss and the every-other-layer student initialisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_utils.training.distill import distillation_loss, init_student_from_teacher


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


def test_student_keeps_first_and_last_layer():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    teacher = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                           num_attention_heads=4, num_key_value_heads=2))
    student = init_student_from_teacher(teacher, 2)
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    for kept, original in zip(student.model.layers, [teacher.model.layers[0], teacher.model.layers[3]]):
        torch.testing.assert_close(kept.mlp.up_proj.weight, original.mlp.up_proj.weight)
    ids = torch.randint(0, 50, (1, 6))
    assert student(ids).logits.shape == (1, 6, 50)
    assert student.generate(ids, max_new_tokens=3, do_sample=False).shape == (1, 9)
    with pytest.raises(ValueError, match="between 1 and"):
        init_student_from_teacher(teacher, 5)


# --- layer map and initialisation ---------------------------------------------------------------------------------

from course_utils.training import distill  # noqa: E402


def _llama(layers=4, hidden=32, heads=4, kv_heads=2, intermediate=64, vocab=50, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                                        num_hidden_layers=layers, num_attention_heads=heads,
                                        num_key_value_heads=kv_heads, head_dim=hidden // heads))


@pytest.mark.parametrize(("teacher", "student", "expected"), [
    (4, 2, [1, 3]), (12, 6, [1, 3, 5, 7, 9, 11]), (32, 16, list(range(1, 32, 2))), (4, 4, [0, 1, 2, 3]),
    (4, 1, [3]), (6, 4, [0, 2, 3, 5]),
])
def test_layer_map(teacher, student, expected):
    assert distill.teacher_layers_for_student(teacher, student, rule="last") == expected


def test_layer_map_keeps_the_last_layer_and_matches_the_float_rule_of_the_data_build():
    for teacher in range(1, 40):
        for student in range(1, teacher + 1):
            got = distill.teacher_layers_for_student(teacher, student, rule="last")
            assert got[-1] == teacher - 1 and got == sorted(set(got)), (teacher, student)
            gaps = {b - a for a, b in zip([-1, *got], got)}
            assert max(gaps) - min(gaps) <= 1, (teacher, student, got)
            if teacher % student == 0:
                step = teacher / student
                assert got == [int(i * step + step - 1) for i in range(student)]
    with pytest.raises(ValueError, match="between 1 and the teacher's 4"):
        distill.teacher_layers_for_student(4, 0)


def test_narrower_student_takes_the_leading_block_of_every_matrix():
    teacher = _llama(layers=4, hidden=64, heads=4, kv_heads=2, intermediate=128)
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    student = distill.init_student_from_teacher(teacher, student_config=config)
    t_layer, s_layer = teacher.model.layers[3], student.model.layers[1]
    torch.testing.assert_close(s_layer.self_attn.q_proj.weight, t_layer.self_attn.q_proj.weight[:32, :32])
    torch.testing.assert_close(s_layer.self_attn.k_proj.weight, t_layer.self_attn.k_proj.weight[:16, :32])
    torch.testing.assert_close(s_layer.mlp.down_proj.weight, t_layer.mlp.down_proj.weight[:32, :48])
    torch.testing.assert_close(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight[:, :32])
    torch.testing.assert_close(student.lm_head.weight, teacher.lm_head.weight[:, :32])
    ids = torch.randint(0, 50, (1, 5))
    assert student(ids).logits.shape == (1, 5, 50)


def test_selection_refuses_what_cannot_be_cut_out():
    from transformers import LlamaConfig

    teacher = _llama(layers=4, hidden=64, heads=4, kv_heads=2, intermediate=128)
    wrong_vocab = LlamaConfig(vocab_size=60, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    with pytest.raises(ValueError, match="vocabularies differ"):
        distill.init_student_from_teacher(teacher, student_config=wrong_vocab)
    wrong_heads = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=4, head_dim=8)
    with pytest.raises(ValueError, match="head dimensions differ.*query heads per key/value head"):
        distill.init_student_from_teacher(teacher, student_config=wrong_heads)
    with pytest.raises(ValueError, match="disagrees"):
        distill.init_student_from_teacher(teacher, 3, student_config=wrong_heads)


# --- other losses -------------------------------------------------------------------------------------------------


def test_kl_divergence_is_asymmetric_and_zero_on_itself():
    g = torch.Generator().manual_seed(1)
    p, q = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    forward = distill.kl_divergence(p, q)
    manual = (F.softmax(p, -1) * (F.log_softmax(p, -1) - F.log_softmax(q, -1))).sum(-1)
    torch.testing.assert_close(forward, manual)
    assert not torch.allclose(forward, distill.kl_divergence(q, p))
    assert distill.kl_divergence(p, p + 3.0).abs().max() < 1e-6  # a constant shift of the logits changes nothing


def test_softened_keeps_the_ranking_and_flattens():
    logits = torch.tensor([3.0, 1.0, 0.0])
    hot, cold = distill.softened(logits, 4.0), distill.softened(logits, 1.0)
    assert hot.argmax() == cold.argmax() and hot.max() < cold.max()
    with pytest.raises(ValueError):
        distill.softened(logits, 0.0)


def test_kd_loss_fn_freezes_the_teacher_and_matches_the_loss():
    teacher, student = _llama(seed=0), _llama(layers=2, seed=1)
    inputs, targets = torch.randint(0, 50, (2, 6)), torch.randint(0, 50, (2, 6))
    loss = distill.kd_loss_fn(teacher, alpha=0.7, temperature=2.0)(student, inputs, targets)
    expected = distillation_loss(student(inputs).logits, teacher(inputs).logits, targets, alpha=0.7,
                                 temperature=2.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.lm_head.weight.grad is not None


def test_hidden_state_distiller_same_and_different_widths():
    teacher, student = _llama(seed=0), _llama(layers=2, seed=1)
    ids = torch.randint(0, 50, (2, 6))
    t_out, s_out = teacher(ids, output_hidden_states=True), student(ids, output_hidden_states=True)
    same = distill.HiddenStateDistiller([1, 3], 32, 32)
    per_layer = same.per_layer(s_out.hidden_states, t_out.hidden_states)
    manual = F.mse_loss(s_out.hidden_states[2], t_out.hidden_states[4])
    assert per_layer[1].item() == pytest.approx(manual.item(), rel=1e-6)
    assert not list(same.parameters())  # nothing to learn when the widths agree
    narrow = _llama(layers=2, hidden=16, heads=2, kv_heads=1, intermediate=32, seed=2)
    projected = distill.HiddenStateDistiller([1, 3], 16, 32)
    loss = projected(narrow(ids, output_hidden_states=True).hidden_states, t_out.hidden_states)
    loss.backward()
    assert projected.projections[0].weight.shape == (32, 16) and projected.projections[0].weight.grad is not None
    assert distill.layer_outputs(t_out.hidden_states)[0] is t_out.hidden_states[1]
    with pytest.raises(ValueError, match="only 4 layers"):
        distill.HiddenStateDistiller([1, 4], 32, 32)(s_out.hidden_states, t_out.hidden_states)
    with pytest.raises(ValueError, match="3 entries but the student has 2"):
        distill.HiddenStateDistiller([1, 2, 3], 32, 32)(s_out.hidden_states, t_out.hidden_states)


def test_feature_kd_loss_fn_adds_the_feature_term():
    teacher, student = _llama(seed=0), _llama(layers=2, seed=1)
    distiller = distill.HiddenStateDistiller([1, 3], 32, 32)
    ids, targets = torch.randint(0, 50, (2, 6)), torch.randint(0, 50, (2, 6))
    logit_only = distill.feature_kd_loss_fn(teacher, distiller, beta=0.0, alpha=0.5)(student, ids, targets)
    both = distill.feature_kd_loss_fn(teacher, distiller, beta=2.0, alpha=0.5)(student, ids, targets)
    feature = distiller(student(ids, output_hidden_states=True).hidden_states,
                        teacher(ids, output_hidden_states=True).hidden_states)
    assert both.item() == pytest.approx(logit_only.item() + 2.0 * feature.item(), rel=1e-5)


# --- measuring ----------------------------------------------------------------------------------------------------


def test_top1_agreement():
    teacher = torch.tensor([[[0.0, 5.0, 1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 2.0]]])
    student = torch.tensor([[[0.0, 1.0, 0.5], [0.0, 4.0, 0.0], [1.0, 0.0, 9.0]]])
    assert distill.top1_agreement(student, teacher) == pytest.approx(2 / 3)
    assert distill.top1_agreement(student, teacher, torch.tensor([[True, True, False]])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="selects none"):
        distill.top1_agreement(student, teacher, torch.zeros(1, 3, dtype=torch.bool))


def test_heldout_metrics_against_lm_loss():
    from course_utils.training.train import lm_loss

    teacher, student = _llama(seed=0), _llama(layers=2, seed=1)
    inputs, targets = torch.randint(0, 50, (4, 8)), torch.randint(0, 50, (4, 8))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, targets), batch_size=2)
    tokens = distill.teacher_top1(teacher, loader)
    metrics = distill.heldout_metrics(student, loader, teacher_tokens=tokens)
    with torch.no_grad():
        assert metrics["loss"] == pytest.approx(lm_loss(student, inputs, targets).item(), rel=1e-5)
        s, t = student(inputs).logits, teacher(inputs).logits
    assert metrics["agreement"] == pytest.approx(distill.top1_agreement(s, t), rel=1e-6)
    assert metrics["perplexity"] == pytest.approx(float(torch.tensor(metrics["loss"]).exp()), rel=1e-6)
    assert 0 < metrics["entropy"] <= float(torch.tensor(50.0).log()) + 1e-5
    assert distill.heldout_metrics(teacher, loader, teacher_tokens=tokens)["agreement"] == 1.0


def test_generation_speed_counts_tokens():
    model = _llama(layers=1)
    speed = distill.generation_speed(model, torch.randint(2, 50, (2, 4)), new_tokens=5, repeats=1)
    assert speed > 0
    assert distill.count_parameters(model) == sum(p.numel() for p in model.parameters())


# --- black box ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_teacher():
    from course_utils.ground import sources

    return sources.load_causal_lm("tiny-llama", verbose=False)


def test_generate_completions_returns_only_the_new_text(tiny_teacher):
    model, tokenizer = tiny_teacher
    prompts = ["Once upon a time, there was a", "Long ago"]
    greedy = distill.generate_completions(model, tokenizer, prompts, max_new_tokens=8, do_sample=False,
                                          progress=False)
    assert len(greedy) == 2 and all(isinstance(text, str) and text for text in greedy)
    assert tokenizer.padding_side == "right"  # restored
    one = distill.generate_completions(model, tokenizer, prompts[:1], max_new_tokens=8, do_sample=False,
                                       progress=False)
    assert one[0] == greedy[0]  # left padding does not change the answer
    assert not greedy[0].startswith(prompts[0])


def test_prompt_response_dataset_masks_the_prompt(tiny_teacher):
    _, tokenizer = tiny_teacher
    data = distill.prompt_response_dataset(tokenizer, ["Once upon a time,"], [" there was a cat."], max_length=16)
    inputs, targets = data[0]
    prompt_len = len(tokenizer("Once upon a time,", add_special_tokens=False)["input_ids"])
    response = tokenizer(" there was a cat.", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert inputs.shape == targets.shape == (16,)
    assert (targets[: prompt_len - 1] == -100).all()
    assert targets[prompt_len - 1: prompt_len - 1 + len(response)].tolist() == response
    assert (targets[prompt_len - 1 + len(response):] == -100).all()
    assert inputs[prompt_len: prompt_len + len(response) - 1].tolist() == response[:-1]
    with pytest.raises(ValueError, match="1 prompts but 2 responses"):
        distill.prompt_response_dataset(tokenizer, ["a"], ["b", "c"], max_length=8)


def test_a_student_copied_from_a_frozen_teacher_is_trainable():
    teacher = _llama()
    distill.kd_loss_fn(teacher)  # freezes the teacher
    student = distill.init_student_from_teacher(teacher, 2)
    assert all(p.requires_grad for p in student.parameters())
    assert not any(p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize(("teacher", "student", "expected"), [
    (4, 2, [0, 3]), (12, 6, [0, 2, 4, 7, 9, 11]), (4, 4, [0, 1, 2, 3]), (6, 1, [0]), (6, 3, [0, 3, 5]),
    (28, 16, [0, 2, 4, 5, 7, 9, 11, 13, 14, 16, 18, 20, 22, 23, 25, 27]),
])
def test_spread_layer_map(teacher, student, expected):
    assert distill.teacher_layers_for_student(teacher, student, rule="spread") == expected


def test_spread_rule_rounds_to_the_nearest_and_keeps_both_ends():
    for teacher in range(2, 40):
        for student in range(2, teacher + 1):
            got = distill.teacher_layers_for_student(teacher, student, rule="spread")
            assert got[0] == 0 and got[-1] == teacher - 1 and got == sorted(set(got)), (teacher, student)
            exact = [i * (teacher - 1) / (student - 1) for i in range(student)]
            assert all(abs(g - e) <= 0.5 for g, e in zip(got, exact)), (teacher, student)
    with pytest.raises(ValueError, match="Unknown rule"):
        distill.teacher_layers_for_student(4, 2, rule="middle")


def test_student_from_explicit_layers():
    teacher = _llama()
    student = distill.init_student_from_teacher(teacher, layers=[0, 3])
    assert student.config.num_hidden_layers == 2
    torch.testing.assert_close(student.model.layers[0].mlp.up_proj.weight, teacher.model.layers[0].mlp.up_proj.weight)
    torch.testing.assert_close(student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[3].mlp.up_proj.weight)
    assert [layer.self_attn.layer_idx for layer in student.model.layers] == [0, 1]
    with pytest.raises(ValueError, match="between 0 and 3"):
        distill.init_student_from_teacher(teacher, layers=[0, 4])
    with pytest.raises(ValueError, match="3 layers listed for a 2-layer student"):
        distill.init_student_from_teacher(teacher, 2, layers=[0, 1, 2])
