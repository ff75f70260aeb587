"""course_utils.serving.llama_cpp_run: llama.cpp (llama-cpp-python) runs the GGUF files the workbook writes, the LoRA
adapter file included, and agrees with transformers within the tolerances of the number formats. Skipped where
llama_cpp is not installed (CI installs it: the workbook's `llama` extra)."""

from __future__ import annotations

import pytest
import torch

from course_utils.ground import sources
from course_utils.serving import llama_cpp_run
from course_utils.storage import gguf_io

PROMPTS = ["Translate to Zorbish: a big dog jumps.\nZorbish:", "Once upon a time"]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

available, why = llama_cpp_run.available()
needs_llama_cpp = pytest.mark.skipif(not available, reason=f"llama.cpp not run: {why}")


def load_plain():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(sources.resolve_model("tiny-llama").location, dtype=torch.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A LoRA adapter with random B on tiny-llama, its merged model, and the GGUF files of base, merge and adapter."""
    from peft import LoraConfig, PeftModel, get_peft_model

    folder = tmp_path_factory.mktemp("llama_cpp")
    tokenizer = sources.load_tokenizer("tiny-llama")
    torch.manual_seed(0)
    adapted = get_peft_model(load_plain(), LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS,
                                                      task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    adapted.save_pretrained(folder / "adapter")
    merged = PeftModel.from_pretrained(load_plain(), str(folder / "adapter")).merge_and_unload().half().eval()
    files = {t: gguf_io.write_gguf(merged, tokenizer, folder / f"merged-{t}.gguf", t) for t in ("f16", "q8_0")}
    files["base"] = gguf_io.write_gguf(load_plain(), tokenizer, folder / "base-f16.gguf", "f16")
    files["adapter"] = gguf_io.write_lora_gguf(folder / "adapter", merged.config, folder / "adapter.gguf")
    files["adapter, no permutation"] = gguf_io.write_lora_gguf(folder / "adapter", merged.config,
                                                               folder / "adapter-wrong.gguf", permute=False)
    return merged.float(), tokenizer, files


def test_the_lora_file_holds_a_and_b_for_every_adapted_layer(exported):
    merged, _, files = exported
    records = files["adapter"].tensors
    assert len(records) == 2 * len(TARGETS) * merged.config.num_hidden_layers
    assert {r.name.rsplit(".", 1)[-1] for r in records} == {"lora_a", "lora_b"}
    metadata = gguf_io.read_metadata(files["adapter"].path)
    assert metadata["general.type"] == "adapter" and metadata["adapter.type"] == "lora"
    assert metadata["adapter.lora.alpha"] == 16.0
    assert gguf_io.lora_alpha_for_llama_cpp({"lora_alpha": 16, "r": 4, "use_rslora": True}) == 32.0
    with pytest.raises(ValueError, match="DoRA"):
        gguf_io.lora_alpha_for_llama_cpp({"lora_alpha": 16, "r": 4, "use_dora": True})


@needs_llama_cpp
@pytest.mark.parametrize("file_type", ["f16", "q8_0"])
def test_llama_cpp_runs_the_export_within_the_formats_tolerance(exported, file_type):
    merged, tokenizer, files = exported
    llm = llama_cpp_run.load(files[file_type].path)
    row = llama_cpp_run.compare_with_transformers(llm, merged, tokenizer, PROMPTS, chat=False, label=file_type,
                                                  file_type=file_type)
    llm.close()
    assert row["within tolerance"] == "yes", row
    assert row["same tokens"] == f"{len(PROMPTS)}/{len(PROMPTS)}"
    assert row["largest logit difference / largest logit"] > 0  # llama.cpp's own kernels, not a copy
    if file_type == "f16":
        assert row["same greedy answers"] == f"{len(PROMPTS)}/{len(PROMPTS)}"


@needs_llama_cpp
def test_base_plus_adapter_in_llama_cpp_is_the_merged_model(exported):
    merged, tokenizer, files = exported
    with_adapter = llama_cpp_run.load(files["base"].path, lora_path=files["adapter"].path)
    row = llama_cpp_run.compare_with_transformers(with_adapter, merged, tokenizer, PROMPTS, chat=False,
                                                  label="base + adapter", file_type="f16")
    assert row["within tolerance"] == "yes", row
    merged_llm = llama_cpp_run.load(files["f16"].path)
    ids = tokenizer(PROMPTS[0])["input_ids"]
    a, b = llama_cpp_run.logits(with_adapter, ids), llama_cpp_run.logits(merged_llm, ids)
    assert ((a - b).abs().max() / b.abs().max()).item() <= llama_cpp_run.LLAMA_CPP_TOLERANCE["f16"]
    base_only = llama_cpp_run.load(files["base"].path)
    assert ((llama_cpp_run.logits(base_only, ids) - b).abs().max() / b.abs().max()).item() > 0.05  # adapter matters
    wrong = llama_cpp_run.load(files["base"].path, lora_path=files["adapter, no permutation"].path)
    bad = llama_cpp_run.compare_with_transformers(wrong, merged, tokenizer, PROMPTS, chat=False, label="wrong",
                                                  file_type="f16")
    assert bad["within tolerance"] == "NO"  # the check can fail
    for llm in (with_adapter, merged_llm, base_only, wrong):
        llm.close()


@needs_llama_cpp
def test_a_k_quant_made_by_llama_cpp_runs(exported, tmp_path):
    merged, tokenizer, files = exported
    made, message = llama_cpp_run.quantize_with_llama_cpp(files["f16"].path, tmp_path / "q4_k_m.gguf", "Q4_K_M")
    assert made is not None and made.exists(), message
    llm = llama_cpp_run.load(made)
    assert llama_cpp_run.logits(llm, tokenizer(PROMPTS[1])["input_ids"]).shape[-1] == merged.config.vocab_size
    llm.close()


def test_without_llama_cpp_the_messages_say_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setattr(llama_cpp_run.shutil, "which", lambda name: None)
    monkeypatch.setattr(llama_cpp_run.importlib.util, "find_spec", lambda name: None)
    assert llama_cpp_run.find_llama_cpp() == {"llama-quantize": None, "llama_cpp (Python bindings)": None}
    made, message = llama_cpp_run.quantize_with_llama_cpp(tmp_path / "a.gguf", tmp_path / "b.gguf", "Q4_K_M")
    assert made is None and "NOT made" in message and "pip install llama-cpp-python" in message
    ok, reason = llama_cpp_run.available()
    assert not ok and "pip install llama-cpp-python" in reason
