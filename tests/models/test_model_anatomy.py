"""course_utils.models.model_anatomy: parameters per component, tied embeddings, the GPT-2 to Llama 3 tables, MoE counts."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM

from course_utils.ground import paths
from course_utils.models import auto_classes, model_anatomy, model_specs


@pytest.mark.parametrize(("name", "component"), [
    ("transformer.wte.weight", "token embeddings"),
    ("transformer.wpe.weight", "position embeddings"),
    ("transformer.h.0.ln_1.bias", "norms"),
    ("transformer.h.3.attn.c_attn.weight", "attention"),
    ("transformer.h.3.mlp.c_fc.weight", "feed-forward"),
    ("model.layers.0.input_layernorm.weight", "norms"),
    ("model.layers.0.self_attn.q_norm.weight", "norms"),
    ("model.layers.1.mlp.gate_proj.weight", "feed-forward"),
    ("model.layers.1.mlp.gate.weight", "MoE router"),
    ("model.layers.1.mlp.experts.gate_up_proj", "feed-forward (experts)"),
    ("lm_head.weight", "output head"),
    ("bert.encoder.layer.0.attention.output.dense.weight", "attention"),
    ("bert.encoder.layer.0.output.dense.weight", "feed-forward"),
    ("shared.weight", "token embeddings"),
    ("something.else", "other"),
])
def test_component_of(name, component):
    assert model_anatomy.component_of(name) == component


@pytest.mark.parametrize("name", ["GPT-2", "Llama-3-8B", "Gemma-2B"])
def test_breakdown_adds_up_to_the_known_total(name):
    counts = model_anatomy.parameter_breakdown(model_anatomy.meta_model(name))
    assert sum(counts.values()) == model_specs.model_size(name).total_params
    assert "other" not in counts
    assert ("output head" in counts) == (not model_specs.model_size(name).tied_embeddings)


def test_breakdown_table_has_a_total_row_with_100_percent():
    rows = model_anatomy.breakdown_table({"GPT-2": model_anatomy.meta_model("GPT-2")})
    assert rows[-1] == {"component": "total", "GPT-2": "124,439,808 (100.0%)"}
    assert rows[1] == {"component": "position embeddings", "GPT-2": "786,432 (0.6%)"}


def test_tied_embeddings_by_data_ptr():
    gpt2 = AutoModelForCausalLM.from_pretrained(paths.data_dir() / "models" / "tiny-gpt2")
    llama = AutoModelForCausalLM.from_pretrained(paths.data_dir() / "models" / "tiny-llama")
    tied, untied = model_anatomy.tied_embeddings(gpt2), model_anatomy.tied_embeddings(llama)
    assert tied.tied and tied.config_says and tied.saved_params == 832 * 128
    assert (tied.input_name, tied.output_name) == ("transformer.wte.weight", "lm_head.weight")
    assert not untied.tied and not untied.config_says and untied.saved_params == 0
    assert untied.input_name == "model.embed_tokens.weight"
    summary = model_anatomy.state_dict_summary(gpt2, saved=True)
    assert summary["state_dict entries"] == summary["named_parameters()"] + 1  # the tied head, listed twice
    assert summary["distinct tensors in state_dict"] == summary["named_parameters()"]
    assert summary["tensors save_pretrained writes"] == summary["named_parameters()"]  # written once
    assert "lm_head.weight" not in model_anatomy.saved_tensor_names(gpt2)
    assert "lm_head.weight" in model_anatomy.saved_tensor_names(llama)


def test_tied_embeddings_needs_a_head():
    base = auto_classes.build(__import__("transformers").AutoModel, auto_classes.tiny_config("llama"), "cpu")
    with pytest.raises(ValueError, match="no output layer"):
        model_anatomy.tied_embeddings(base)


def test_parameter_names_of_one_block():
    llama = AutoModelForCausalLM.from_pretrained(paths.data_dir() / "models" / "tiny-llama")
    rows = model_anatomy.parameter_names(llama, layer=0)
    names = [row["name"] for row in rows]
    assert names[0] == "model.embed_tokens.weight" and names[-1] == "lm_head.weight"
    assert not any(".layers.1." in n for n in names)
    assert len(model_anatomy.parameter_names(llama, layer=None)) == 39
    assert len(model_anatomy.parameter_names(llama, first=3)) == 3


def test_architecture_table_is_generated_from_the_configs():
    table = {row[""]: row for row in model_anatomy.architecture_table()}
    assert table["attention"]["Llama-3-8B"].startswith("GQA: 32 query / 8")
    assert table["attention"]["Gemma-2B"].startswith("MQA")
    assert table["positions"]["GPT-2"].startswith("learned table, 1,024 x 768")
    assert table["positions"]["Llama-3-8B"] == "RoPE on q and k, theta = 500,000"
    assert table["normalization"]["GPT-2"].startswith("LayerNorm")
    assert table["normalization"]["Llama-2-7B"] == "RMSNorm"
    assert table["feed-forward"]["Llama-2-7B"] == "gated silu: 4096->2x11008->4096 (3 matrices)"
    assert table["KV cache at 4,096 tokens, 16-bit"]["Llama-2-7B"] == "2.000 GiB"
    assert table["KV cache at 4,096 tokens, 16-bit"]["Llama-3-8B"] == "0.500 GiB"


def test_changes_table_numbers():
    rows = {row["change"]: row["what it buys"] for row in model_anatomy.changes_table()}
    assert rows["MHA -> GQA"].startswith("k/v projection weights per layer 33,554,432 -> 8,388,608")
    assert "512 -> 128 KiB" in rows["MHA -> GQA"]
    assert "786,432 position parameters -> 0" in rows["learned position table -> RoPE"]
    assert "8.00 d^2 -> 8.06 d^2" in rows["GELU MLP -> SwiGLU"]


def test_moe_counts_of_mixtral():
    counts = model_anatomy.moe_counts(model_anatomy.meta_model(model_anatomy.MIXTRAL_8X7B))
    # Mistral AI's announcement: 46.7B parameters in total, 12.9B used per token.
    assert round(counts.total / 1e9, 1) == 46.7
    assert round(counts.active / 1e9, 1) == 12.9
    with pytest.raises(ValueError, match="not a mixture of experts"):
        model_anatomy.moe_counts(model_anatomy.meta_model("GPT-2"))


def test_plot_rope_scaling_returns_a_figure():
    fig = model_anatomy.plot_rope_scaling(64)
    assert len(fig.axes) == 1 and fig.axes[0].get_yscale() == "log"
