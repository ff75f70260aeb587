"""course_utils.finetuning.adapter_vs_merged and sft_eval on a PEFT model with non-zero adapters: saved, reloaded, merged,
compared; mixed-adapter batches; evaluation of greedy answers."""

from __future__ import annotations

import pytest
import torch

from course_utils.finetuning import adapter_vs_merged, sft_eval
from course_utils.ground import paths, sources
from course_utils.serving import export

PROMPTS = ["Translate to Zorbish: a big dog jumps.\nZorbish:", "Translate to Zorbish: the red cat sleeps.\nZorbish:"]


def load_plain():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(sources.resolve_model("tiny-llama").location, dtype=torch.float32)


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    """A PEFT LoRA model on tiny-llama with random (non-zero) B matrices, saved; and its tokenizer."""
    from peft import LoraConfig, get_peft_model

    tokenizer = sources.load_tokenizer("tiny-llama")
    torch.manual_seed(0)
    model = get_peft_model(load_plain(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"],
                                                    task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    model.eval()
    folder = tmp_path_factory.mktemp("lora") / "adapter"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer, folder


def test_saved_adapter_reloads_exactly_and_merges_within_tolerance(adapted, tmp_path):
    from peft import AutoPeftModelForCausalLM, PeftModel

    model, tok, folder = adapted
    reference = sft_eval.logits_on(model, tok, PROMPTS, chat=False)
    files = export.folder_bytes(folder)
    assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    config = export.adapter_config(folder)
    assert config["r"] == 4 and paths.display_path(config["base_model_name_or_path"]) == "data/models/tiny-llama"
    reloaded = PeftModel.from_pretrained(load_plain(), str(folder))
    auto = AutoPeftModelForCausalLM.from_pretrained(str(folder))
    assert torch.equal(sft_eval.logits_on(reloaded, tok, PROMPTS, chat=False), reference)
    assert torch.equal(sft_eval.logits_on(auto, tok, PROMPTS, chat=False), reference)

    merged = PeftModel.from_pretrained(load_plain(), str(folder)).merge_and_unload()
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    merged.save_pretrained(tmp_path / "merged")
    tok.save_pretrained(tmp_path / "merged")
    report = adapter_vs_merged.compare_merged(
        reloaded, merged, tok, PROMPTS, chat=False, new_tokens=4,
        load_adapter_model=lambda: PeftModel.from_pretrained(load_plain(), str(folder)),
        load_merged_model=lambda: sources.load_causal_lm(str(tmp_path / "merged"), verbose=False)[0])
    assert report["within tolerance"] and report["same greedy answers"] == 1.0
    assert report["relative difference"] <= adapter_vs_merged.merge_tolerance(torch.float32)
    assert [row["model"] for row in report["rows"]] == ["adapter (PeftModel)", "merged (merge_and_unload)"]
    assert report["rows"][0]["model MiB"] > report["rows"][1]["model MiB"]
    assert all(row["cold start s"] > 0 for row in report["rows"])


def test_mixed_adapter_batch(adapted):
    model, tok, _ = adapted
    mixed = adapter_vs_merged.generate_mixed(model, tok, PROMPTS, ["default", "__base__"], chat=False,
                                             max_new_tokens=5)
    assert mixed[0] == sft_eval.generate(model, tok, PROMPTS[:1], chat=False, max_new_tokens=5)[0]
    assert mixed[1] == sft_eval.generate(load_plain(), tok, PROMPTS[1:], chat=False, max_new_tokens=5)[0]


def test_tenancy_and_tolerances():
    rows = adapter_vs_merged.tenancy_table({"m": (1000.0, 10.0)}, tenants=(1, 100))
    assert rows[1]["N merged copies"] == "97.66 KiB" and rows[1]["one base + N adapters"] == "1.95 KiB"
    assert adapter_vs_merged.merge_tolerance(torch.float32) < adapter_vs_merged.merge_tolerance(torch.float16)


def test_evaluation_and_answer_probabilities(adapted):
    from course_utils.finetuning import sft_data

    model, tok, _ = adapted
    rows = sources.load_text_dataset("zorbish", "test").select(range(4))
    evaluation = sft_eval.evaluate_generation(model, tok, rows, chat=False)
    assert len(evaluation.predictions) == 4 and set(evaluation.scores) >= {"exact match", "token F1", "BLEU"}
    example = sft_data.tokenize_example(tok, rows[0]["prompt"], rows[0]["completion"], chat=False)
    probabilities = sft_eval.answer_token_probabilities(model, tok, example)
    assert len(probabilities) == sum(label != -100 for label in example["labels"])
    assert probabilities[-1]["token"] == "<|endoftext|>" and all(0 <= r["p(token)"] <= 1 for r in probabilities)
