"""course_utils.models.model_specs: counts on the meta device agree with the formula from the config's own numbers."""

from __future__ import annotations

import pytest

from course_utils.models import model_specs


def _llama_formula(c: dict) -> int:
    """Parameters of a Llama-style model from its config: embeddings, attention, SwiGLU MLP, norms, head."""
    h, layers, vocab = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
    kv = c["num_key_value_heads"] * (h // c["num_attention_heads"])
    attention = h * h * 2 + h * kv * 2  # q and o, then k and v
    mlp = 3 * h * c["intermediate_size"]
    per_layer = attention + mlp + 2 * h  # two RMSNorms
    head = 0 if c["tie_word_embeddings"] else vocab * h
    return vocab * h + layers * per_layer + h + head


@pytest.mark.parametrize("name", ["Llama-2-7B", "Llama-3-8B", "Mistral-7B-v0.1"])
def test_meta_device_count_matches_the_formula(name):
    spec = model_specs.get_spec(name)
    size = model_specs.model_size(name)
    assert size.total_params == _llama_formula(dict(spec.config))
    assert size.block_linear_params < size.total_params and size.other_params > 0


def test_attention_kind_and_lora_parameters():
    assert model_specs.model_size("Llama-2-7B").attention == "MHA"
    assert model_specs.model_size("Llama-3-8B").attention == "GQA"
    size = model_specs.model_size("Llama-2-7B")
    expected = sum(16 * (d_in + d_out) for _, d_in, d_out in size.linear_layers)
    assert model_specs.lora_adapter_params("Llama-2-7B", 16) == expected


def test_an_unknown_model_says_how_to_size_one():
    with pytest.raises(KeyError, match="ModelSpec"):
        model_specs.get_spec("no-such-model")
