"""course_utils.models.memory and model_specs: counted parameters, bytes per format, KV cache, fit tables."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from course_utils.ground.machine import MachineMemory
from course_utils.models import memory, model_specs
from course_utils.models.model_specs import ModelSpec
from course_utils.reporting import tables

GIB = 2**30

# Totals published with the models (model cards, papers and the hub's parameter counts).
KNOWN_TOTALS = {
    "Llama-2-7B": 6_738_415_616,
    "Llama-3-8B": 8_030_261_248,
    "Mistral-7B-v0.1": 7_241_732_096,
    "Phi-3-mini-4k": 3_821_079_552,
    "Gemma-2B": 2_506_172_416,
    "Qwen2.5-0.5B": 494_032_768,
    "Llama-3.2-1B": 1_235_814_400,
    "SmolLM2-360M": 361_821_120,
    "SmolLM2-135M": 134_515_008,
    "GPT-2": 124_439_808,
}

TINY_LLAMA = ModelSpec("tiny-test-llama", "none/none", {
    "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 97, "max_position_embeddings": 128,
    "tie_word_embeddings": False}, "test")
TINY_GPT2 = ModelSpec("tiny-test-gpt2", "none/none", {
    "model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64, "vocab_size": 100,
    "bos_token_id": 0, "eos_token_id": 0}, "test")


# --- parameter counts --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(KNOWN_TOTALS))
def test_counted_parameters_match_published_totals(name):
    assert model_specs.model_size(name).total_params == KNOWN_TOTALS[name]


def test_every_spec_has_a_known_total():
    assert set(model_specs.MODEL_SPECS) == set(KNOWN_TOTALS)


def test_geometry_of_the_seed_models():
    llama2, llama3, gemma = (model_specs.model_size(n) for n in ("Llama-2-7B", "Llama-3-8B", "Gemma-2B"))
    assert (llama2.n_layers, llama2.n_kv_heads, llama2.head_dim, llama2.attention) == (32, 32, 128, "MHA")
    assert (llama3.n_kv_heads, llama3.attention) == (8, "GQA")
    assert (gemma.n_kv_heads, gemma.head_dim, gemma.attention, gemma.tied_embeddings) == (1, 256, "MQA", True)


def test_quantizable_part_excludes_embeddings_and_output():
    size = model_specs.model_size("Llama-2-7B")
    embeddings_and_head = 2 * 32000 * 4096
    norms = (2 * 32 + 1) * 4096
    assert size.other_params == embeddings_and_head + norms
    assert size.block_linear_params + size.other_params == size.total_params


def test_get_spec_by_hub_id_and_unknown():
    assert model_specs.get_spec("meta-llama/Llama-2-7b-hf").name == "Llama-2-7B"
    with pytest.raises(KeyError, match="ModelSpec"):
        model_specs.get_spec("Llama-9-1T")


# --- LoRA adapter parameters, checked against peft itself --------------------------------------------------------


def _peft_trainable(spec: ModelSpec, r: int, targets) -> int:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(spec.build_config())
    peft_model = get_peft_model(model, LoraConfig(r=r, target_modules=targets))
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


@pytest.mark.filterwarnings("ignore:fan_in_fan_out")
@pytest.mark.parametrize("spec", [TINY_LLAMA, TINY_GPT2], ids=["llama", "gpt2-conv1d"])
@pytest.mark.parametrize("r", [1, 8])
def test_lora_count_matches_peft_all_linear(spec, r):
    assert model_specs.lora_adapter_params(spec, r) == _peft_trainable(spec, r, "all-linear")


def test_lora_count_matches_peft_named_targets():
    targets = ("q_proj", "v_proj")
    assert model_specs.lora_adapter_params(TINY_LLAMA, 4, targets) == _peft_trainable(TINY_LLAMA, 4, list(targets))


def test_lora_known_value_and_errors():
    # r=16 on q/k/v/o/gate/up/down of Llama-2-7B: 32 layers x 16 x (4 x 8192 + 3 x 15104).
    assert model_specs.lora_adapter_params("Llama-2-7B", 16) == 32 * 16 * (4 * 8192 + 3 * (4096 + 11008))
    with pytest.raises(ValueError, match="linear layers are"):
        model_specs.lora_adapter_params("Llama-2-7B", 16, ("qkv_proj",))
    with pytest.raises(ValueError, match="positive integer"):
        model_specs.lora_adapter_params("Llama-2-7B", 0)


# --- bits and bytes ----------------------------------------------------------------------------------------------


def test_nf4_bits():
    assert memory.nf4_bits_per_param(64) == 4.5
    assert memory.nf4_bits_per_param(64, double_quant=True) == 4 + 8 / 64 + 32 / (64 * 256)
    assert round(memory.BITS_PER_PARAM["nf4+dq"], 3) == 4.127
    with pytest.raises(ValueError):
        memory.nf4_bits_per_param(0)


@given(st.sampled_from([16, 32, 64, 128, 256]), st.sampled_from([64, 128, 256]))
def test_double_quant_always_saves_memory(block, dq_block):
    single = memory.nf4_bits_per_param(block)
    double = memory.nf4_bits_per_param(block, double_quant=True, dq_block_size=dq_block)
    assert 4 < double < single


def test_bytes_per_param():
    assert [memory.bytes_per_param(f) for f in ("fp32", "bf16", "fp16", "int8")] == [4, 2, 2, 1]
    assert memory.bytes_per_param(4.5) == 0.5625
    with pytest.raises(KeyError, match="Unknown format"):
        memory.bytes_per_param("fp8")


@given(st.integers(1, 10**12), st.sampled_from([4, 4.5, 8, 16, 32]))
def test_weights_gib_scales_with_bits(n, bits):
    assert math.isclose(memory.weights_gib(n, 2 * bits), 2 * memory.weights_gib(n, bits))
    assert math.isclose(memory.weights_gib(n, bits) * GIB, memory.weights_bytes(n, bits))


# --- KV cache ----------------------------------------------------------------------------------------------------


def test_kv_cache_llama2_7b_4096_tokens_fp16_is_2_gib():
    assert memory.kv_cache_bytes(32, 32, 128, 4096, 1, 2) == 2 * GIB
    assert memory.model_kv_cache_bytes("Llama-2-7B", 4096) == 2 * GIB


def test_gqa_shrinks_the_cache_by_the_group_size():
    assert memory.model_kv_cache_bytes("Llama-3-8B", 4096) == memory.model_kv_cache_bytes("Llama-2-7B", 4096) / 4


@given(st.integers(1, 100_000), st.integers(1, 64), st.integers(1, 8))
@settings(max_examples=50)
def test_kv_cache_is_linear_in_context_and_batch(context, batch, k):
    one = memory.kv_cache_bytes(32, 8, 128, context, batch)
    assert memory.kv_cache_bytes(32, 8, 128, k * context, batch) == k * one
    assert memory.kv_cache_bytes(32, 8, 128, context, k * batch) == k * one


# --- breakdowns --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(KNOWN_TOTALS))
def test_full_finetune_is_16_bytes_per_parameter(name):
    parts = memory.breakdown(name, "full fine-tune")
    assert parts.total - parts.activations == 16 * KNOWN_TOTALS[name]
    assert (parts.weights, parts.gradients) == (2 * KNOWN_TOTALS[name], 2 * KNOWN_TOTALS[name])


@pytest.mark.parametrize("name", list(KNOWN_TOTALS))
def test_methods_order(name):
    total = {m: memory.breakdown(name, m).total for m in memory.METHODS}
    assert total["inference nf4"] < total["inference int8"] < total["inference 16-bit"] < total["inference fp32"]
    assert total["QLoRA"] < total["LoRA"] < total["full fine-tune"]


def test_lora_and_qlora_parts():
    n = model_specs.lora_adapter_params("Llama-2-7B", 16)
    lora = memory.breakdown("Llama-2-7B", "LoRA", lora_r=16)
    assert lora.weights == 2 * KNOWN_TOTALS["Llama-2-7B"] + 4 * n
    assert (lora.gradients, lora.optimizer, lora.kv_cache) == (4 * n, 8 * n, 0)
    bigger = memory.breakdown("Llama-2-7B", "LoRA", lora_r=64)
    assert bigger.optimizer == 4 * lora.optimizer


def test_inference_includes_kv_cache_and_no_training_state():
    parts = memory.breakdown("Llama-2-7B", "inference 16-bit", context=4096)
    assert parts.kv_cache == 2 * GIB and parts.gradients == parts.optimizer == parts.activations == 0
    assert memory.breakdown("Llama-2-7B", "inference fp32", context=4096).kv_cache == 4 * GIB


def test_breakdown_errors():
    with pytest.raises(KeyError, match="Unknown method"):
        memory.breakdown("GPT-2", "inference fp8")
    with pytest.raises(ValueError, match="at least 1"):
        memory.breakdown("GPT-2", "LoRA", context=0)


# --- fit tables --------------------------------------------------------------------------------------------------


def test_fit_table_against_a_fake_16_gib_gpu():
    table = memory.fit_table(["Llama-2-7B"], memory=16 * GIB, headroom=0.2, context=4096)
    assert table.budget_bytes == pytest.approx(12.8 * GIB)
    assert not table.row("Llama-2-7B", "inference 16-bit").fits  # 12.55 GiB weights + 2 GiB KV cache
    assert table.row("Llama-2-7B", "inference nf4").fits
    assert table.row("Llama-2-7B", "QLoRA").fits
    assert not table.row("Llama-2-7B", "full fine-tune").fits


def test_fit_boundary_is_inclusive():
    total = memory.breakdown("GPT-2", "LoRA").total
    assert memory.fit_table(["GPT-2"], ["LoRA"], memory=total / 0.75, headroom=0.25).rows[0].fits
    assert not memory.fit_table(["GPT-2"], ["LoRA"], memory=total / 0.75 * 0.999, headroom=0.25).rows[0].fits


def test_fit_table_with_machine_memory_and_errors():
    fake = MachineMemory("mps", "test Mac", 8 * GIB, 5 * GIB, 8 * GIB, 5 * GIB, "test")
    table = memory.fit_table(["SmolLM2-135M"], memory=fake, headroom=0)
    assert table.memory_bytes == 8 * GIB and "test Mac" in table.caption()
    with pytest.raises(ValueError, match="headroom"):
        memory.fit_table(memory=GIB, headroom=1.5)
    with pytest.raises(ValueError, match="positive"):
        memory.fit_table(memory=0)


def test_fit_table_renders():
    table = memory.fit_table(["Llama-3-8B", "GPT-2"], memory=16 * GIB)
    text = table.to_markdown()
    assert text.startswith("| model") and "Llama-3-8B" in text and " NO " in text and " yes " in text
    assert "&#10003;" in table._repr_html_() and "&#10007;" in table._repr_html_()
    details = table.details("GPT-2")
    assert details.count("\n|") >= len(memory.METHODS) + 1
    assert len(table.as_dicts()) == 2 * len(memory.METHODS)
    with pytest.raises(KeyError):
        table.details("Llama-2-7B")


def test_markdown_table_aligns_numbers_right():
    text = tables.markdown_table(["a", "n"], [["x", 1], ["yy", 22]])
    assert text.splitlines() == ["| a  |  n |", "|----|---:|", "| x  |  1 |", "| yy | 22 |"]


# --- the course documents' claims -------------------------------------------------------------------------------------------


def test_claims_computed_on_real_models():
    values = {c.statement: memory.claim_value(c)[0] for c in memory.DOCUMENT_CLAIMS}
    # the exam-question notes give the Llama-2-7b safetensors file as 13.48 GB: the 16-bit weights, computed.
    assert round(values["Llama-2-7b model.safetensors: 13.48 GB"] / 1e9, 2) == 13.48
    assert values["7B in fp32: 28 GB"] == 4 * KNOWN_TOTALS["Llama-2-7B"]
    assert 3e9 < values["7B in 4-bit / QLoRA (NF4): about 3-4 GB"] < 4e9
    assert values["7B full fine-tuning: 28 GB"] == 16 * KNOWN_TOTALS["Llama-2-7B"]
    table = memory.claims_table()
    assert table.count("\n") == len(memory.DOCUMENT_CLAIMS) + 1


def test_fact_tables():
    assert "4.12695" in memory.bits_table()
    assert "| full fine-tune (ZeRO split) |       2 |         2 |        12 |          16 |" in \
        memory.training_bytes_table()
    kv = memory.kv_table(["Llama-2-7B", "Llama-3-8B"], [4096])
    assert "2.00" in kv and "0.50" in kv and "GQA (8 kv)" in kv


# --- plots and the explorer --------------------------------------------------------------------------------------


def test_plots_return_figures():
    fig = memory.plot_breakdown(["Llama-2-7B", "GPT-2"], memory=16 * GIB)
    assert len(fig.axes) == 2
    assert len(fig.axes[0].patches) == len(memory.METHODS) * len(memory.PART_COLORS)
    fig = memory.plot_kv_growth(["Llama-2-7B", "Llama-3-8B"], max_context=16384)
    line = fig.axes[0].lines[0]
    assert line.get_ydata()[-1] == pytest.approx(2.0)  # Llama-2-7B's trained context (4096) ends at 2 GiB


def test_explorer_prints_the_table_without_ipython(capsys):
    assert memory.fit_explorer("GPT-2", memory=8 * GIB) is None
    out = capsys.readouterr().out
    assert out.startswith("GPT-2:") and "inference nf4" in out and "QLoRA" in out


def test_explorer_widget_shows_the_table_as_text(monkeypatch):
    import IPython
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: shown.extend(objs))
    explorer = memory.fit_explorer("GPT-2", memory=8 * GIB)
    assert explorer is not None and len(shown) == 2, "the table and the plot go into the widget's output area"
    assert repr(explorer).startswith("GPT-2:") and "QLoRA" in repr(explorer)
    model_box = explorer.children[0].children[0]
    model_box.value = "SmolLM2-135M"  # the update callback must run without error
