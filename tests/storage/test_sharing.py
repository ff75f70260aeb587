"""course_utils.storage.sharing: the saved folder explained, logits compared, Hub cells closed without flag and token."""

from __future__ import annotations

import pytest
import torch

from course_utils.ground import paths
from course_utils.storage import sharing

TINY = paths.data_dir() / "models" / "tiny-llama"


def test_folder_table_explains_every_model_file():
    rows = {r["file"]: r for r in sharing.folder_table(TINY)}
    assert {"model.safetensors", "config.json", "generation_config.json"} <= set(rows)
    assert all(r["what it holds"] for r in rows.values())
    assert sharing.file_role("model-00002-of-00005.safetensors").startswith("one shard")


def test_config_tables_put_llama2_beside_the_tiny_model():
    rows = {r["field"]: r for r in sharing.config_table(TINY)}
    assert rows["hidden_size"]["this model"] == "128" and rows["hidden_size"]["Llama-2-7B (exam-question notes)"] == "4096"
    assert rows["num_key_value_heads"]["Llama-2-7B (exam-question notes)"] == "32"
    generation = {r["field"]: r for r in sharing.config_table(TINY, "generation_config.json")}
    assert generation["temperature"]["Llama-2-7B (exam-question notes)"] == "0.6"
    assert generation["top_p"]["this model"] == "-"


def test_compare_logits():
    a = torch.randn(1, 4, 10)
    same = sharing.compare_logits(a, a.clone())
    assert same["bit-identical"] and same["same top token everywhere"]
    close = sharing.compare_logits(a, a + 1e-5)
    assert not close["bit-identical"] and close[f"within atol={sharing.LOGITS_ATOL:g}, rtol={sharing.LOGITS_RTOL:g}"]
    far = sharing.compare_logits(a, a + 1.0)
    assert not far[f"within atol={sharing.LOGITS_ATOL:g}, rtol={sharing.LOGITS_RTOL:g}"]
    with pytest.raises(ValueError, match="shapes differ"):
        sharing.compare_logits(a, a[:, :2])


def test_hub_gate_is_closed_without_flag_or_token(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setenv("HF_TOKEN", "not-a-real-token-value")
    gate = sharing.hub_gate(False, "me/model")
    assert not gate.enabled and "PUSH_TO_HUB" in gate.reason and "not-a-real" not in str(gate)
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    gate = sharing.hub_gate(True, "me/model")
    assert not gate.enabled and "no Hub token" in gate.reason and "offline" in gate.reason
    assert "NOT RUN" in str(gate)


def test_trainer_settings_save_every_epoch(tmp_path):
    settings = sharing.trainer_hub_settings(tmp_path, "me/model", push=True)
    assert settings["save_strategy"] == "epoch" and settings["hub_model_id"] == "me/model" and settings["push_to_hub"]


@pytest.mark.slow
def test_trainer_arguments_accept_the_settings(tmp_path):
    args = sharing.trainer_hub_arguments(tmp_path, "me/model")
    assert args.save_strategy.value == "epoch" and args.hub_model_id == "me/model" and not args.push_to_hub


def test_transfer_report_never_fails():
    items = {r["item"] for r in sharing.transfer_report()}
    assert "huggingface_hub" in items and "HF_XET_HIGH_PERFORMANCE" in items


def test_loading_fails_clearly_without_config_or_with_an_unknown_architecture():
    assert "model_type" in sharing.try_weights_only(TINY)
    assert "llama9000" in sharing.try_unknown_architecture(TINY)
    message = sharing.try_remote_code_without_trust(TINY)
    assert "custom code" in message and "was executed" not in message


@pytest.mark.slow
def test_a_fresh_process_reproduces_the_logits(tmp_path):
    from course_utils.ground import sources

    model, tokenizer = sources.load_causal_lm("tiny-llama", verbose=False)
    report = sharing.reload_in_fresh_process(TINY, "Once upon a time", "cpu")
    with torch.no_grad():
        reference = model(tokenizer("Once upon a time", return_tensors="pt").input_ids).logits
    result = sharing.compare_logits(reference, report.logits)
    assert result["same top token everywhere"] and result["max |difference|"] < 1e-4
    assert report.model_class == "LlamaForCausalLM" and report.modeling_module.endswith("modeling_llama.py")


def test_describe_error_keeps_whole_sentences_and_hides_the_folder():
    many = ValueError("First sentence is here. " * 20 + "\nsecond line")
    shown = sharing.describe_error(many, limit=60)
    assert shown == "ValueError: First sentence is here. First sentence is here. [...]"
    long_one = KeyError("word " * 100)
    assert sharing.describe_error(long_one, limit=22).endswith("'word word word word [...]")
    assert sharing.describe_error(OSError("no config in /tmp/abc/x"), hide="/tmp/abc/x") == (
        "OSError: no config in <folder>")
