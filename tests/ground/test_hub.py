"""course_utils.ground.hub: the token is found where the Hub's own tools look, never shown; access to gated repositories."""

from __future__ import annotations

import huggingface_hub.constants
import huggingface_hub.errors

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


class _Gated(huggingface_hub.errors.GatedRepoError):
    def __init__(self):  # the real one wants an HTTP response; the class is what access_problem looks at
        Exception.__init__(self, "403 gated")


class _Missing(huggingface_hub.errors.RepositoryNotFoundError):
    def __init__(self):
        Exception.__init__(self, "404")


def _answer(monkeypatch, error):
    asked = []

    def auth_check(repo_id, repo_type=None, **kwargs):
        asked.append((repo_id, repo_type))
        if error is not None:
            raise error

    monkeypatch.setattr(huggingface_hub, "auth_check", auth_check)
    return asked


def test_access_to_a_gated_repository_without_a_token(monkeypatch, tmp_path):
    _no_token(monkeypatch, tmp_path)
    asked = _answer(monkeypatch, _Gated())
    problem = hub.access_problem("meta-llama/Llama-3.2-1B")
    assert asked == [("meta-llama/Llama-3.2-1B", "model")]
    assert "gated" in problem and "no Hugging Face token" in problem and "HF_TOKEN" in problem
    assert "https://huggingface.co/meta-llama/Llama-3.2-1B" in problem


def test_access_to_a_gated_repository_with_a_token_not_yet_granted(monkeypatch, tmp_path):
    _no_token(monkeypatch, tmp_path)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    _answer(monkeypatch, _Gated())
    problem = hub.access_problem("meta-llama/Llama-3.2-1B")
    assert "has no access to it yet" in problem and "request access" in problem
    assert "hf_not_a_real_token" not in problem


def test_access_granted_missing_and_unreachable(monkeypatch):
    _answer(monkeypatch, None)
    assert hub.access_problem("HuggingFaceTB/SmolLM2-135M") is None
    _answer(monkeypatch, _Missing())
    assert "was not found on the Hub" in hub.access_problem("someone/typo")
    _answer(monkeypatch, ConnectionError("no route to host"))
    assert hub.access_problem("someone/model").startswith("could not ask the Hub about someone/model")
