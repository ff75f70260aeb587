"""course_utils.finetuning.lora: the from-scratch layer, its step-0 identity, equality with PEFT, and the counts."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from course_utils.finetuning import lora
from course_utils.ground import sources


@pytest.fixture(scope="module")
def tiny():
    model, _ = sources.load_causal_lm("tiny-llama", verbose=False)
    return model


def test_lora_forward_matches_the_dense_formula():
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(2, 5, 7, generator=g), torch.randn(4, 7, generator=g), torch.randn(4, generator=g)
    a, bb = torch.randn(3, 7, generator=g), torch.randn(4, 3, generator=g)
    dense = w + (8 / 3) * bb @ a
    assert torch.allclose(lora.lora_forward(x, w, b, a, bb, 8, 3), x @ dense.T + b, atol=1e-5)


def test_layer_starts_as_the_base_and_only_a_b_train():
    base = nn.Linear(6, 5)
    layer = lora.LoRALinear(base, r=2, alpha=4)
    x = torch.randn(3, 6)
    assert torch.equal(layer(x), base(x))  # B = 0: exactly the base, not approximately
    assert torch.count_nonzero(layer.lora_A) > 0 and torch.count_nonzero(layer.lora_B) == 0
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["lora_A", "lora_B"]
    assert layer.scaling == 2.0
    layer(x).sum().backward()
    assert layer.lora_B.grad is not None and layer.lora_B.grad.abs().sum() > 0


def test_merged_layer_equals_the_adapted_one():
    layer = lora.LoRALinear(nn.Linear(6, 5), r=2, alpha=4)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 6)
    merged = layer.merged()
    assert isinstance(merged, nn.Linear)
    assert torch.allclose(merged(x), layer(x), atol=1e-5)
    assert torch.allclose(merged.weight, layer.base.weight + layer.delta_weight())


def test_rank_must_be_positive():
    with pytest.raises(ValueError, match="positive integer"):
        lora.LoRALinear(nn.Linear(3, 3), r=0)


def test_counts_seed_example_and_meta_layer():
    assert lora.full_param_count(4096, 4096) == 16_777_216
    assert lora.lora_param_count(4096, 4096, 16) == 131_072
    big = lora.LoRALinear(nn.Linear(4096, 4096, bias=False, device="meta"), r=16)
    assert lora.count_parameters(big) == (131_072, 16_777_216 + 131_072)


def test_tiny_model_counts_match_peft(tiny):
    from peft import LoraConfig, get_peft_model

    shapes = lora.linear_shapes(tiny)
    assert len(shapes) == 28
    ours = sum(lora.lora_param_count(d, k, 16) for _, d, k in shapes)
    peft_model = get_peft_model(copy.deepcopy(tiny), LoraConfig(r=16, lora_alpha=32,
                                                                target_modules=list(lora.LLAMA_TARGETS)))
    trainable, total = lora.count_parameters(peft_model)
    c = tiny.config
    kv = c.num_key_value_heads * c.hidden_size // c.num_attention_heads
    # r x (d_in + d_out) per layer: q and o (h + h), k and v (h + kv), gate and up (h + mlp), down (mlp + h)
    per_block = 16 * (2 * 2 * c.hidden_size + 2 * (c.hidden_size + kv) + 3 * (c.hidden_size + c.intermediate_size))
    assert trainable == ours == c.num_hidden_layers * per_block
    assert total == sum(p.numel() for p in tiny.parameters()) + ours
    rows = lora.count_table(shapes, 16)
    assert rows[-1]["layer"] == "total" and rows[-1]["LoRA r=16 (all layers)"] == ours
    with pytest.raises(ValueError, match="No linear layer"):
        lora.linear_shapes(tiny, ("nope",))


def test_add_lora_is_exact_at_step_zero_and_equals_peft_for_the_same_a_b(tiny):
    from peft import LoraConfig, get_peft_model

    scratch = lora.add_lora(copy.deepcopy(tiny), r=16, alpha=32, seed=0)
    ids = torch.randint(0, tiny.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(scratch(ids).logits, tiny(ids).logits)
    assert len(lora.lora_layers(scratch)) == 28
    assert lora.count_parameters(scratch)[0] == sum(lora.lora_param_count(d, k, 16) for _, d, k in lora.linear_shapes(tiny))

    peft_model = get_peft_model(copy.deepcopy(tiny), LoraConfig(r=16, lora_alpha=32,
                                                                target_modules=list(lora.LLAMA_TARGETS)))
    lora.randomize_lora_B(scratch, std=0.05, seed=3)
    assert lora.copy_into_peft(scratch, peft_model) == 28
    with torch.no_grad():
        ours, theirs, base = scratch(ids).logits, peft_model(ids).logits, tiny(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert (ours - base).abs().max() > 0.1  # the comparison is not trivially between two copies of the base

    lora.merge_lora(scratch)
    assert not lora.lora_layers(scratch)
    with torch.no_grad():
        assert torch.allclose(scratch(ids).logits, ours, atol=1e-4)


def test_copy_into_peft_refuses_a_different_scale(tiny):
    from peft import LoraConfig, get_peft_model

    scratch = lora.add_lora(copy.deepcopy(tiny), r=16, alpha=16)
    peft_model = get_peft_model(copy.deepcopy(tiny), LoraConfig(r=16, lora_alpha=32,
                                                                target_modules=list(lora.LLAMA_TARGETS)))
    with pytest.raises(ValueError, match="same r and lora_alpha"):
        lora.copy_into_peft(scratch, peft_model)
