"""course_utils.ground.hub: the token is found where the Hub's own tools look, and never shown."""

from __future__ import annotations

import huggingface_hub.constants

from course_utils.ground import hub


def _no_token(monkeypatch, tmp_path):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "token"))


def test_no_token_anywhere(monkeypatch, tmp_path):
    _no_token(monkeypatch, tmp_path)
    assert hub.token_present() is False


def test_a_token_in_the_environment(monkeypatch, tmp_path):
    _no_token(monkeypatch, tmp_path)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    assert hub.token_present() is True


def test_a_token_saved_by_hf_auth_login(monkeypatch, tmp_path, capsys):
    _no_token(monkeypatch, tmp_path)
    (tmp_path / "token").write_text("hf_saved_by_login")
    assert hub.token_present() is True
    assert "hf_saved" not in capsys.readouterr().out
