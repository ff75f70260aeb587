"""course_utils.ground.profiles: auto picks tiny offline and colab with a GPU and the hub; named profiles and roles."""

from __future__ import annotations

import pytest

from course_utils.ground import hub, profiles


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
