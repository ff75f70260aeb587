"""course_utils.serving.export: adapters pointed at another base, the two merges of a QLoRA adapter, GGUF export checked
by an independent reader, sizes, the Hub gate, and the Mac recipes."""

from __future__ import annotations

import math

import pytest
import torch

from course_utils.finetuning import lora, quant
from course_utils.finetuning.sft_eval import logits_on
from course_utils.ground import sources
from course_utils.serving import export
from course_utils.storage import gguf_io, sharing

PROMPTS = ["Translate to Zorbish: a big dog jumps.\nZorbish:", "Translate to Zorbish: the cat sleeps.\nZorbish:"]


# Logits through the packed 4-bit CPU kernel differ from an fp32 computation by bf16 rounding of the activations
# (2^-8 relative per rounding, accumulated over the layers); through the generic kernel, by fp32 rounding.
DEQUANTIZED_MERGE_TOLERANCE = {"packed": 2e-2, "generic": 1e-3}


@pytest.fixture(scope="module")
def qlora(tmp_path_factory, bnb_cpu_kernel):
    """A QLoRA model on the 4-bit tiny-llama with non-zero (random) adapters, its saved adapter, and the kernel."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model, tokenizer = load_4bit("tiny-llama")
    assert quant.bnb_cpu_kernel(model) == {"packed": quant.PACKED_CPU_KERNEL,
                                           "generic": quant.GENERIC_CPU_KERNEL}[bnb_cpu_kernel]
    torch.manual_seed(0)
    model = get_peft_model(prepare_model_for_kbit_training(model, use_gradient_checkpointing=False),
                           LoraConfig(r=4, lora_alpha=8, target_modules=list(lora.LLAMA_TARGETS), task_type="CAUSAL_LM"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    model.eval()
    adapter_dir = tmp_path_factory.mktemp("qlora") / "adapter"
    model.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    return model, tokenizer, adapter_dir, bnb_cpu_kernel


def load_4bit(name):
    """A 4-bit NF4 model (quantized at load, or saved so) and its tokenizer, as the notebooks load them."""
    from transformers import AutoModelForCausalLM

    location = sources.resolve_model(name).location
    # A folder saved quantized brings its own quantization_config (passing one, even None, would override it).
    extra = {} if quant.saved_quantized(location) else {"quantization_config": quant.nf4_config(torch.float32)}
    return AutoModelForCausalLM.from_pretrained(location, **extra), sources.load_tokenizer(name)


def _relative(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_retarget_adapter_copies_and_changes_only_the_base(qlora, tmp_path):
    _, _, adapter_dir, _ = qlora
    before = export.adapter_config(adapter_dir)
    copy = export.retarget_adapter(adapter_dir, "meta-llama/Llama-3.2-1B", tmp_path / "copy")
    after = export.adapter_config(copy)
    assert after["base_model_name_or_path"] == "meta-llama/Llama-3.2-1B"
    assert export.adapter_config(adapter_dir) == before
    assert {k: v for k, v in after.items() if k != "base_model_name_or_path"} == \
        {k: v for k, v in before.items() if k != "base_model_name_or_path"}
    assert (copy / "adapter_model.safetensors").exists()


def test_dequantized_weights_are_the_4bit_values(qlora):
    model, _, _, _ = qlora
    weights = export.dequantized_weights(model)
    assert "model.layers.0.self_attn.q_proj.weight" in weights
    original, _ = sources.load_causal_lm("tiny-llama", dtype=torch.float32, device="cpu", verbose=False)
    w = weights["model.layers.0.self_attn.q_proj.weight"]
    o = original.state_dict()["model.layers.0.self_attn.q_proj.weight"]
    assert w.shape == o.shape and not torch.equal(w, o)
    assert _relative(w, o) < 0.2  # NF4 rounding, not another matrix


def test_merging_into_the_dequantized_base_reproduces_the_trained_model(qlora):
    model, tokenizer, adapter_dir, kernel = qlora
    reference = logits_on(model, tokenizer, PROMPTS, chat=False)
    exact = export.merged_16bit(adapter_dir, "tiny-llama", trained_model=model, base="dequantized",
                                dtype=torch.float32)
    original = export.merged_16bit(adapter_dir, "tiny-llama", trained_model=model, base="original",
                                   dtype=torch.float32)
    exact_difference = _relative(logits_on(exact, tokenizer, PROMPTS, chat=False), reference)
    original_difference = _relative(logits_on(original, tokenizer, PROMPTS, chat=False), reference)
    assert exact_difference < DEQUANTIZED_MERGE_TOLERANCE[kernel]
    assert original_difference > 10 * exact_difference
    with pytest.raises(ValueError, match="base must be one of"):
        export.merged_16bit(adapter_dir, "tiny-llama", base="nf4")


def test_merge_choices_and_gguf_export_of_the_merge(qlora, tmp_path):
    model, tokenizer, adapter_dir, kernel = qlora
    rows = export.merge_choices(model, tokenizer, adapter_dir, "tiny-llama", PROMPTS, chat=False)
    assert [r["merged into"].split()[0] for r in rows] == ["dequantized", "original"]
    assert rows[0]["largest logit difference / largest logit"] < rows[1]["largest logit difference / largest logit"]
    merged_dir = export.save_merged_16bit(model, tokenizer, adapter_dir, "tiny-llama", tmp_path / "merged")
    merged, _ = sources.load_causal_lm(str(merged_dir), dtype=torch.float16, device="cpu", verbose=False)
    assert next(merged.parameters()).dtype == torch.float16
    files = export.export_gguf(merged, tokenizer, tmp_path / "gguf", ("f16", "q8_0"), stem="tiny")
    assert [f.path.name for f in files] == ["tiny-f16.gguf", "tiny-q8_0.gguf"]
    for f in files:
        row = export.verify_gguf(f, merged, tokenizer, PROMPTS, chat=False)
        assert row["within tolerance"] and row["same token ids"], row
    sizes = export.formats_table({"adapter": adapter_dir, "merged": merged_dir, "q8": files[1].path})
    assert [r["files"] for r in sizes][2] == 1
    assert sizes[2]["bytes"] == files[1].bytes


def test_size_estimate_follows_bits_per_weight():
    n = 1_000_000_000
    assert export.gguf_size_estimate(n, "f16") == 2e9
    assert math.isclose(export.gguf_size_estimate(n, "q4_k"), n * 4.5 / 8)


def test_push_variants_behind_a_closed_gate_pushes_nothing(tmp_path):
    gate = sharing.hub_gate(False, None)
    rows = export.push_variants(gate, "me/zorbish", adapter_dir=tmp_path, merged_dir=tmp_path, gguf_files=[])
    assert [r["repository"] for r in rows] == ["me/zorbish-lora", "me/zorbish", "me/zorbish-GGUF"]
    assert all(r["status"] == "not pushed (gate closed)" for r in rows)
    unnamed = export.push_variants(gate, None, adapter_dir=tmp_path, merged_dir=tmp_path, gguf_files=[])
    assert unnamed[0]["repository"] == "<HUB_REPO_ID>-lora" and "None" not in str(unnamed)


def test_ollama_modelfile_and_mac_routes(qlora):
    _, tokenizer, _, _ = qlora
    plain = export.ollama_modelfile("tiny-q8_0.gguf", tokenizer, chat=False)
    assert plain.splitlines()[0] == "FROM ./tiny-q8_0.gguf"
    assert 'TEMPLATE """{{ .Prompt }}"""' in plain
    assert f'PARAMETER stop "{tokenizer.eos_token}"' in plain
    chat = export.ollama_modelfile("tiny-q8_0.gguf", tokenizer, chat=True)
    assert "<|assistant|>" in chat and "{{ .Prompt }}" in chat
    routes = export.mac_routes("tiny-q8_0.gguf", "merged_16bit", "hello")
    assert [r["route"].split()[0] for r in routes] == ["transformers", "llama.cpp", "Ollama", "LM", "MLX"]
    assert all(r["Mac GPU?"].startswith("yes") for r in routes)


def test_gguf_tolerances_are_ordered():
    tolerance = gguf_io.GGUF_TOLERANCE
    assert tolerance["f32"] < tolerance["f16"] < tolerance["q8_0"]


def test_a_prequantized_checkpoint_loads_with_its_own_config(tmp_path, bnb_cpu_kernel):
    folder = export.prequantize("tiny-llama", tmp_path / "tiny-llama-bnb-4bit")
    assert quant.saved_quantized(folder) and not quant.saved_quantized(sources.resolve_model("tiny-llama").location)
    model, tokenizer = load_4bit(str(folder))
    assert quant.is_quantized(model)
    at_load, _ = load_4bit("tiny-llama")
    with torch.no_grad():  # inference, so the packed kernel (where forced on) really runs
        saved, fresh = (logits_on(m, tokenizer, PROMPTS, chat=False) for m in (model, at_load))
    assert quant.bnb_cpu_kernel(model) == quant.bnb_cpu_kernel(at_load)
    assert _relative(saved, fresh) < 1e-6  # the same 4-bit values, whichever kernel multiplies them


def test_prequantize_follows_the_precision_rule_on_a_t4(tmp_path, monkeypatch):
    """A T4 (compute capability 7.5) says is_bf16_supported() (emulation): the 4-bit compute dtype is still fp16."""
    import transformers

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla T4")
    loaded = {}

    class FakeModel:
        def save_pretrained(self, folder):
            loaded["saved to"] = folder

    def from_pretrained(location, dtype=None, quantization_config=None, **kwargs):
        loaded.update(dtype=dtype, compute=quantization_config.bnb_4bit_compute_dtype, placement=kwargs)
        return FakeModel()

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    monkeypatch.setattr(export, "release_memory", lambda: None)  # it would ask the (fake) GPU to empty its cache
    export.prequantize("tiny-llama", tmp_path / "q")
    assert loaded["dtype"] == torch.float16 and loaded["compute"] == torch.float16
    assert loaded["placement"] == {"device_map": {"": 0}} and loaded["saved to"] == tmp_path / "q"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (8, 0))  # an A100: bf16 natively
    export.prequantize("tiny-llama", tmp_path / "q")
    assert loaded["dtype"] == torch.bfloat16 and loaded["compute"] == torch.bfloat16
