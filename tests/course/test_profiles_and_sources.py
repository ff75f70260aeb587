"""Profiles resolve with a reason; names resolve to embedded folders, or fail with an error naming both routes."""

from __future__ import annotations

import pytest

from course_utils.course import hub, profiles, sources


def test_auto_is_tiny_offline(capsys):
    profile = profiles.resolve_profile("auto")
    assert profile.name == "tiny"
    assert "hub is not reachable" in profile.reason
    assert "tiny" in capsys.readouterr().out


def test_auto_is_colab_with_a_gpu_and_the_hub(monkeypatch):
    monkeypatch.setattr(profiles, "_cuda_available", lambda: True)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=2.0: True)
    assert profiles.resolve_profile("auto", verbose=False).name == "colab"


def test_auto_is_tiny_with_a_gpu_but_no_hub(monkeypatch):
    monkeypatch.setattr(profiles, "_cuda_available", lambda: True)
    profile = profiles.resolve_profile("auto", verbose=False)
    assert profile.name == "tiny" and "no CUDA GPU" not in profile.reason


@pytest.mark.parametrize("name", ["tiny", "TINY", " colab ", "cluster"])
def test_named_profiles(name):
    assert profiles.resolve_profile(name, verbose=False).name == name.strip().lower()


@pytest.mark.parametrize("bad", ["gpu", "", "small"])
def test_unknown_profile_names_the_choices(bad):
    with pytest.raises(ValueError, match="Unknown profile.*'tiny'.*'colab'.*'cluster'"):
        profiles.resolve_profile(bad)


def test_profile_pick_and_roles():
    tiny, cluster = profiles.PROFILES["tiny"], profiles.PROFILES["cluster"]
    assert tiny.pick(tiny=1, colab=2) == 1
    assert cluster.pick(tiny=1, colab=2) == 2  # a cluster can do what Colab does
    with pytest.raises(KeyError, match="profile 'tiny'"):
        tiny.pick(colab=2)
    with pytest.raises(KeyError, match="known roles"):
        tiny.model("nonsense")
    for profile in profiles.PROFILES.values():
        assert set(profile.models) == set(profiles.MODEL_ROLES)
        assert set(profile.datasets) == set(profiles.DATASET_ROLES)


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
