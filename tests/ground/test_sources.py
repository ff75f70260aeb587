"""course_utils.ground.sources: names resolve to embedded folders, the hub or the cache, or fail naming both routes."""

from __future__ import annotations

import pytest

from course_utils.ground import hub, profiles, sources


def test_every_tiny_name_is_embedded():
    tiny = profiles.PROFILES["tiny"]
    for name in tiny.models.values():
        assert sources.resolve_model(name).origin == "embedded"
    for name in tiny.datasets.values():
        assert sources.resolve_dataset(name).origin == "embedded"


def test_hub_model_offline_names_hub_id_and_embedded_alternative():
    with pytest.raises(sources.SourceNotFoundError) as info:
        sources.resolve_model("HuggingFaceTB/SmolLM2-135M")
    message = str(info.value)
    assert "HuggingFaceTB/SmolLM2-135M" in message and "'tiny-llama'" in message
    assert "HF_HUB_OFFLINE" in message and "PROFILE = 'tiny'" in message


def test_unknown_model_name_lists_embedded_models():
    with pytest.raises(sources.SourceNotFoundError, match="Unknown model 'tiny-lama'.*tiny-llama"):
        sources.resolve_model("tiny-lama")


def test_hub_used_when_reachable(monkeypatch):
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=2.0: True)
    source = sources.resolve_model("Qwen/Qwen2.5-0.5B")
    assert (source.origin, source.location) == ("hub", "Qwen/Qwen2.5-0.5B")


def test_local_folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert sources.resolve_model(str(tmp_path)).origin == "local"


def test_offline_switch_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.offline_requested() and not hub.hub_reachable()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert not hub.offline_requested()


def test_load_embedded_model_and_dataset():
    model, tokenizer = sources.load_causal_lm("tiny-llama", verbose=False)
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert tokenizer.pad_token is not None
    stories = sources.load_text_dataset("tiny-stories")
    assert set(stories) == {"train", "validation"} and "text" in stories["train"].column_names
    test = sources.load_text_dataset("zorbish", "test", max_examples=5)
    assert len(test) == 5 and {"prompt", "completion"} <= set(test.column_names)
    with pytest.raises(KeyError, match="splits"):
        sources.load_text_dataset("zorbish", "dev")
