"""course_utils.models.auto_classes: config.json to classes, offline; clear errors for unknown architectures and heads."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from course_utils.ground import paths, sources
from course_utils.models import arch, auto_classes

TINY_LLAMA = paths.data_dir() / "models" / "tiny-llama"


def test_class_table_maps_every_architecture_the_seeds_name():
    rows = {row["model_type"]: row for row in auto_classes.class_table()}
    expected_causal = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "gemma": "GemmaForCausalLM",
                       "phi3": "Phi3ForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM",
                       "mixtral": "MixtralForCausalLM"}
    for model_type, cls in expected_causal.items():
        assert rows[model_type]["AutoModelForCausalLM"] == cls
        assert rows[model_type]["AutoModelForMaskedLM"] == "-"
        assert cls in rows[model_type]["architectures in config.json"]
    assert rows["bert"]["AutoModelForMaskedLM"] == "BertForMaskedLM"
    assert rows["t5"]["AutoModelForCausalLM"] == "-"
    assert rows["t5"]["AutoModelForSeq2SeqLM"] == "T5ForConditionalGeneration"
    assert rows["bart"]["AutoModel"] == "BartModel"


def test_tiny_models_run_on_real_tensors():
    for model_type in ("llama", "gemma", "phi3", "qwen2", "mistral", "mixtral", "gpt2"):
        model = auto_classes.build(AutoModelForCausalLM, auto_classes.tiny_config(model_type), device="cpu")
        logits = model(input_ids=torch.randint(3, 256, (1, 5))).logits
        assert logits.shape == (1, 5, 256), model_type


def test_describe_checkpoint_of_the_embedded_models():
    info = auto_classes.describe_checkpoint(TINY_LLAMA)
    assert (info.model_type, info.config_class, info.auto_class, info.model_class) == (
        "llama", "LlamaConfig", "AutoModelForCausalLM", "LlamaForCausalLM")
    assert info.custom_code == ()
    gpt2 = auto_classes.describe_checkpoint(auto_classes.config_json("tiny-gpt2"))
    assert gpt2.model_class == "GPT2LMHeadModel"
    assert {row["field"] for row in info.as_rows()} >= {"model_type", "auto_class"}


def test_describe_checkpoint_without_architectures_falls_back_to_the_base_model():
    info = auto_classes.describe_checkpoint({"model_type": "llama"})
    assert (info.auto_class, info.model_class) == ("AutoModel", "LlamaModel")


@pytest.mark.parametrize(("architecture", "auto"), [
    ("LlamaForCausalLM", "AutoModelForCausalLM"), ("GPT2LMHeadModel", "AutoModelForCausalLM"),
    ("BertForMaskedLM", "AutoModelForMaskedLM"), ("T5ForConditionalGeneration", "AutoModelForSeq2SeqLM"),
    ("LlamaForSequenceClassification", "AutoModelForSequenceClassification"), ("LlamaModel", "AutoModel"),
    ("NoSuchModelForCausalLM", None),
])
def test_auto_class_for(architecture, auto):
    assert auto_classes.auto_class_for(architecture) == auto


def test_unknown_model_type_error_says_what_to_do(tmp_path):
    folder = auto_classes.write_unknown_checkpoint(tmp_path / "moe")
    with pytest.raises(auto_classes.UnknownArchitectureError) as caught:
        auto_classes.describe_checkpoint(folder)
    message = str(caught.value)
    for needed in ("model_type='zorbish_moe'", "ZorbishMoeForCausalLM", "pip install -U transformers",
                   "trust_remote_code", "spelling"):
        assert needed in message
    assert "auto_map" not in message  # no code shipped: the error does not invent any
    assert isinstance(caught.value, ValueError)


def test_unknown_model_type_with_shipped_code_names_the_files_and_the_risk(tmp_path):
    folder = auto_classes.write_unknown_checkpoint(tmp_path / "moe", with_custom_code=True)
    with pytest.raises(auto_classes.UnknownArchitectureError,
                       match=r"configuration_zorbish_moe\.py.*with your permissions.*off by default") as caught:
        auto_classes.load_config(folder)
    assert "revision" in str(caught.value)


def test_trust_remote_code_runs_the_shipped_file(tmp_path, capsys):
    folder = auto_classes.write_unknown_checkpoint(tmp_path / "moe_ok", with_custom_code=True)
    config = auto_classes.load_config(folder, trust_remote_code=True)
    assert type(config).__name__ == "ZorbishMoeConfig" and config.num_experts == 8
    assert "is running inside your Python process" in capsys.readouterr().out


def test_load_config_refuses_none_so_nothing_waits_for_a_keyboard(tmp_path):
    with pytest.raises(TypeError, match="True or False"):
        auto_classes.load_config(TINY_LLAMA, trust_remote_code=None)
    assert type(auto_classes.load_config(TINY_LLAMA)).__name__ == "LlamaConfig"


def test_missing_model_type_and_missing_file(tmp_path):
    with pytest.raises(auto_classes.UnknownArchitectureError, match="no model_type"):
        auto_classes.describe_checkpoint({"architectures": ["LlamaForCausalLM"]})
    with pytest.raises(FileNotFoundError, match="No config.json"):
        auto_classes.describe_checkpoint(tmp_path)
    with pytest.raises(auto_classes.UnknownArchitectureError):
        auto_classes.tiny_config("zorbish_moe")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"hidden_size": 100, "num_attention_heads": 3}, "hidden_size=100 is not divisible by num_attention_heads=3"),
    ({"num_attention_heads": 4, "num_key_value_heads": 3}, "not divisible by num_key_value_heads=3"),
])
def test_mismatched_heads_are_caught_before_building(overrides, message, tmp_path):
    with pytest.raises(arch.HeadCountError, match=message):
        auto_classes.tiny_config("llama", **overrides)
    config = json.loads((TINY_LLAMA / "config.json").read_text())
    config.update(overrides)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(arch.HeadCountError, match="The llama config cannot build attention layers"):
        auto_classes.describe_checkpoint(tmp_path)
    with pytest.raises(arch.HeadCountError):
        auto_classes.load_config(tmp_path)


def test_gpt2_and_t5_head_fields_are_validated_too():
    with pytest.raises(arch.HeadCountError, match="gpt2"):
        auto_classes.validate_head_counts({"model_type": "gpt2", "n_embd": 100, "n_head": 3})
    auto_classes.validate_head_counts({"model_type": "t5", "d_model": 64, "num_heads": 4, "d_kv": 16})
    auto_classes.validate_head_counts({"model_type": "unknown"})  # nothing to check


def test_task_and_moe_tables():
    tasks = {row["Auto class"]: row for row in auto_classes.task_table()}
    assert "llama: LlamaForCausalLM" in tasks["AutoModelForCausalLM"]["examples"]
    assert "bert: BertForMaskedLM" in tasks["AutoModelForMaskedLM"]["examples"]
    assert int(tasks["AutoModelForCausalLM"]["model types"]) > 50
    moe = {row["model_type"]: row for row in auto_classes.moe_support()}
    assert moe["mixtral"]["AutoModelForCausalLM builds"] == "MixtralForCausalLM"
    assert moe["zorbish_moe"]["AutoModelForCausalLM builds"] == "-"


def test_causal_models_ignore_later_tokens_and_bert_does_not():
    torch.manual_seed(0)
    ids = torch.randint(3, 200, (1, 7))
    llama = auto_classes.build(AutoModelForCausalLM, auto_classes.tiny_config("llama"), device="cpu").eval()
    from transformers import AutoModelForMaskedLM

    bert = auto_classes.build(AutoModelForMaskedLM, auto_classes.tiny_config("bert"), device="cpu").eval()
    assert auto_classes.changes_earlier_positions(llama, ids) == 0.0
    assert auto_classes.changes_earlier_positions(bert, ids) > 0.0
    rows = auto_classes.attention_direction({"llama": llama, "bert": bert}, ids + 600)  # ids folded into vocab
    assert [row["earlier positions see the last token"] for row in rows] == ["no (causal)", "yes (bidirectional)"]


def test_output_shapes_of_causal_and_seq2seq_models():
    from transformers import AutoModelForSeq2SeqLM

    causal = auto_classes.build(AutoModelForCausalLM, auto_classes.tiny_config("llama"), device="cpu").eval()
    t5 = auto_classes.build(AutoModelForSeq2SeqLM, auto_classes.tiny_config("t5"), device="cpu").eval()
    rows = auto_classes.output_shapes({"causal": causal, "t5": t5}, torch.randint(3, 200, (2, 6)))
    assert rows[0]["outputs"].startswith("logits (2, 6, 256)")
    assert "decoder_input_ids (2, 3)" in rows[1]["inputs"] and "logits (2, 3, 256)" in rows[1]["outputs"]


def test_shift_table_pairs_each_position_with_the_next_token():
    model, tokenizer = sources.load_causal_lm("tiny-llama", verbose=False)
    text = "Once upon a time"
    rows = auto_classes.shift_table(model, tokenizer, text, first=10)
    tokens = [tokenizer.decode([t]) for t in tokenizer(text).input_ids]
    assert len(rows) == len(tokens)
    assert [row["input token"] for row in rows] == [repr(t) for t in tokens]
    assert [row["label = input at t+1"] for row in rows[:-1]] == [repr(t) for t in tokens[1:]]
    assert rows[-1]["right"] == ""
