"""course_utils.finetune: formatting and masking, the collator, a short training run, saving, reloading, merging,
the backend seam, memory measurement and the LoRA-versus-QLoRA summaries."""

from __future__ import annotations

import pytest
import torch

from course_utils import finetune, sources

PROMPT = "Translate to Zorbish: a big dog jumps.\nZorbish:"
COMPLETION = " bell pond shell cold zo"


@pytest.fixture(scope="module")
def tokenizer():
    return sources.load_tokenizer("tiny-llama")


@pytest.fixture(scope="module")
def rows():
    return sources.load_text_dataset("zorbish")


@pytest.fixture(scope="module")
def trained(tokenizer, rows, tmp_path_factory):
    """A LoRA model after a few steps, and the loss before and after on validation examples."""
    model, tok = finetune.load_model("tiny-llama", device="cpu")
    model = finetune.add_adapters(model, finetune.LoraSettings(r=8, alpha=16, seed=0))
    train = finetune.format_dataset(rows["train"].select(range(64)), tok, chat=False)
    val = finetune.format_dataset(rows["validation"].select(range(16)), tok, chat=False)
    before = finetune.evaluate_loss(model, tok, val)
    result = finetune.train(model, tok, train, finetune.SFTSettings(max_steps=8, batch_size=8, learning_rate=5e-3,
                                                                    warmup_steps=1, logging_steps=2),
                            eval_data=val, progress=False)
    return model, tok, before, result, val


# ------------------------------------------------------------------------------------------------ formatting
def test_plain_example_masks_the_prompt_and_ends_with_eos(tokenizer):
    example = finetune.tokenize_example(tokenizer, PROMPT, COMPLETION, chat=False)
    prompt_ids = tokenizer(PROMPT)["input_ids"]
    n = len(prompt_ids)
    assert example["input_ids"][:n] == prompt_ids
    assert example["labels"][:n] == [-100] * n
    assert example["labels"][n:] == example["input_ids"][n:]
    assert example["input_ids"][-1] == tokenizer.eos_token_id
    assert finetune.decode_labels(tokenizer, example) == "\u00b7" * n + COMPLETION + "<|endoftext|>"
    table = finetune.show_labels(tokenizer, example)
    assert table[0]["in the loss"] == "-" and table[-1]["in the loss"] == "yes"


def test_chat_example_uses_the_template_and_its_prompt_is_what_generation_sees(tokenizer):
    example = finetune.tokenize_example(tokenizer, PROMPT, COMPLETION, chat=True)
    prompt_ids = finetune.encode_prompt(tokenizer, PROMPT, chat=True)
    assert tokenizer.decode(prompt_ids).startswith("<|user|>") and tokenizer.decode(prompt_ids).endswith("<|assistant|>")
    assert example["input_ids"][: len(prompt_ids)] == prompt_ids
    assert sum(label != -100 for label in example["labels"]) == len(example["input_ids"]) - len(prompt_ids)
    assert finetune.has_chat_template(tokenizer)
    assert finetune.stop_ids(tokenizer, chat=True) == [tokenizer.eos_token_id]


def test_truncation_keeps_the_start():
    example = finetune.build_example([1, 2, 3], [4, 5, 6], max_length=4)
    assert example == {"input_ids": [1, 2, 3, 4], "labels": [-100, -100, -100, 4]}


def test_format_dataset(tokenizer, rows):
    data = finetune.format_dataset(rows["validation"], tokenizer, chat=False)
    assert data.column_names == ["input_ids", "labels"] and len(data) == 64
    from_list = finetune.format_dataset([{"prompt": PROMPT, "completion": COMPLETION}], tokenizer, chat=False)
    assert from_list[0] == finetune.tokenize_example(tokenizer, PROMPT, COMPLETION, chat=False)


def test_collator_pads_right_with_minus_100_labels():
    batch = finetune.CompletionCollator(pad_token_id=1)([
        finetune.build_example([5, 6], [7, 0]), finetune.build_example([5], [8, 9, 0])])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [5, 8, 9, 0]]
    short = finetune.CompletionCollator(pad_token_id=1, pad_to_multiple_of=8)([finetune.build_example([5], [7])])
    assert short["input_ids"].tolist() == [[5, 7, 1, 1, 1, 1, 1, 1]]
    assert short["labels"].tolist() == [[-100, 7] + [-100] * 6]
    assert short["attention_mask"].tolist() == [[1, 1] + [0] * 6]


# ------------------------------------------------------------------------------------------------ training
def test_a_few_steps_lower_the_loss(trained):
    _, _, before, result, _ = trained
    assert result.steps == 8 and len(result.step_seconds) == 8
    assert result.eval_loss < before
    assert [e["step"] for e in result.log if "loss" in e] == [2, 4, 6, 8]
    assert result.seconds > 0 and result.cpu_seconds > 0 and result.seconds_per_step > 0
    assert result.peak is not None and result.peak.peak_bytes > 0
    steps, losses = result.loss_curve()
    assert steps == [2, 4, 6, 8] and len(losses) == 4
    assert finetune.plot_runs({"LoRA": result}) is not None


def test_only_adapters_train(trained):
    model = trained[0]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert model.course_backend == "peft"


def test_save_reload_and_merge(trained, tmp_path):
    model, tok, _, _, _ = trained
    prompts = [PROMPT, "Translate to Zorbish: the red cat sleeps.\nZorbish:"]
    reference = finetune.logits_on(model, tok, prompts, chat=False)
    folder = finetune.save_adapter(model, tmp_path / "adapter", tok)
    files = finetune.folder_bytes(folder)
    assert "adapter_model.safetensors" in files and "adapter_config.json" in files
    assert "model.safetensors" not in files
    config = finetune.adapter_config(folder)
    assert config["r"] == 8 and config["lora_alpha"] == 16
    assert finetune.display_path(config["base_model_name_or_path"]) == "data/models/tiny-llama"

    reloaded = finetune.load_adapter("tiny-llama", folder, device="cpu")
    auto = finetune.load_adapter_auto(folder, device="cpu")
    assert torch.equal(finetune.logits_on(reloaded, tok, prompts, chat=False), reference)
    assert torch.equal(finetune.logits_on(auto, tok, prompts, chat=False), reference)

    merged = finetune.merge(finetune.load_adapter("tiny-llama", folder, device="cpu"))
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    difference = (finetune.logits_on(merged, tok, prompts, chat=False) - reference).abs().max()
    assert difference <= finetune.merge_tolerance(torch.float32) * reference.abs().max()
    merged_dir = finetune.save_merged(merged, tok, tmp_path / "merged")
    assert "model.safetensors" in finetune.folder_bytes(merged_dir)

    report = finetune.compare_merged(
        reloaded, merged, tok, prompts, chat=False, new_tokens=4,
        load_adapter_model=lambda: finetune.load_adapter("tiny-llama", folder, device="cpu"),
        load_merged_model=lambda: sources.load_causal_lm(str(merged_dir), verbose=False)[0])
    assert report["within tolerance"] and report["same greedy answers"] == 1.0
    assert [row["model"] for row in report["rows"]] == ["adapter (PeftModel)", "merged (merge_and_unload)"]
    assert report["rows"][0]["model MiB"] > report["rows"][1]["model MiB"]

    mixed = finetune.generate_mixed(reloaded, tok, prompts, ["default", "__base__"], chat=False, max_new_tokens=5)
    assert mixed[0] == finetune.generate(reloaded, tok, prompts[:1], chat=False, max_new_tokens=5)[0]
    base_model, _ = sources.load_causal_lm("tiny-llama", verbose=False)
    assert mixed[1] == finetune.generate(base_model, tok, prompts[1:], chat=False, max_new_tokens=5)[0]


def test_answer_token_probabilities(trained):
    model, tok, _, _, val = trained
    rows = finetune.answer_token_probabilities(model, tok, val[0])
    assert len(rows) == sum(label != -100 for label in val[0]["labels"])
    assert rows[-1]["token"] == "<|endoftext|>"
    assert all(0 <= row["p(token)"] <= 1 for row in rows)


def test_evaluate_generation_scores_predictions(trained, rows):
    model, tok, _, _, _ = trained
    evaluation = finetune.evaluate_generation(model, tok, rows["test"].select(range(4)), chat=False)
    assert len(evaluation.predictions) == 4 and set(evaluation.scores) >= {"exact match", "token F1", "BLEU"}


# ------------------------------------------------------------------------------------------------ backends
class FakeBackend(finetune.Backend):
    name = "fake"

    def available(self):
        return True, "for the test"

    def load_model(self, name, *, load_in_4bit, device, dtype, max_seq_length):
        return torch.nn.Linear(2, 2), "tokenizer"


def test_backend_registry_and_auto_preference():
    assert finetune.get_backend("auto").name == "peft"
    finetune.register_backend(FakeBackend())
    try:
        assert finetune.get_backend("auto").name == "fake"
        model, tokenizer = finetune.load_model("anything", backend="auto", device="cpu")
        assert model.course_backend == "fake" and tokenizer == "tokenizer"
        assert finetune.get_backend(None, model).name == "fake"
    finally:
        finetune.BACKENDS.pop("fake")
        finetune.AUTO_ORDER.remove("fake")
    with pytest.raises(KeyError, match="Unknown backend"):
        finetune.get_backend("nope")
    with pytest.raises(NotImplementedError):
        finetune.Backend().add_adapters(None, finetune.LoraSettings())


def test_settings():
    config = finetune.LoraSettings(r=4, alpha=8, dropout=0.1).peft_config()
    assert (config.r, config.lora_alpha, config.lora_dropout) == (4, 8, 0.1)
    assert set(config.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    args = finetune.SFTSettings(max_steps=5).training_arguments("/tmp/unused", torch.device("cpu"))
    assert args.use_cpu and not args.bf16 and not args.fp16 and args.max_steps == 5
    nf4 = finetune.nf4_config(device="cpu")
    assert nf4.bnb_4bit_quant_type == "nf4" and nf4.bnb_4bit_use_double_quant
    assert nf4.bnb_4bit_compute_dtype == torch.float32


# ------------------------------------------------------------------------------------------------ memory, tables
def test_peak_memory_sees_an_allocation():
    with finetune.measure_peak_memory("cpu") as measured:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        block += 1
    del block
    assert measured["peak"].increase_bytes > 32 * 2**20
    assert "resident" in measured["peak"].method
    assert set(finetune.memory_stats("cpu")) >= {"device", "process resident memory"}


def test_human_bytes_and_tenancy():
    assert finetune.human_bytes(3 * 2**30) == "3.00 GiB" and finetune.human_bytes(10) == "10 B"
    rows = finetune.tenancy_table({"m": (1000.0, 10.0)}, tenants=(1, 100))
    assert rows[1]["N merged copies"] == finetune.human_bytes(100_000)
    assert rows[1]["one base + N adapters"] == finetune.human_bytes(2000)


def test_claims_verdicts():
    lora_row = {"model MiB": 4.0, "training peak above start MiB": 50.0, "s per step": 0.2, "exact match": 1.0}
    qlora_row = {"model MiB": 1.5, "training peak above start MiB": 60.0, "s per step": 0.3, "exact match": 0.98}
    verdicts = [row["borne out?"] for row in finetune.claims_verdicts(lora_row, qlora_row)]
    assert verdicts == ["yes for the model; peak about the same", "yes", "yes"]


@pytest.mark.slow
def test_qlora_trains_on_a_4bit_base(rows):
    model, tok = finetune.load_model("tiny-llama", load_in_4bit=True, device="cpu")
    assert finetune.is_quantized(model)
    footprint = finetune.model_bytes(model)
    model = finetune.add_adapters(model, finetune.LoraSettings(r=8, alpha=16))
    assert finetune.is_quantized(model)
    train = finetune.format_dataset(rows["train"].select(range(32)), tok, chat=False)
    val = finetune.format_dataset(rows["validation"].select(range(8)), tok, chat=False)
    before = finetune.evaluate_loss(model, tok, val)
    result = finetune.train(model, tok, train, finetune.SFTSettings(max_steps=4, batch_size=8, warmup_steps=1,
                                                                    logging_steps=2), eval_data=val, progress=False)
    assert result.eval_loss < before
    full, _ = sources.load_causal_lm("tiny-llama", verbose=False)
    assert footprint < 0.5 * finetune.model_bytes(full)
