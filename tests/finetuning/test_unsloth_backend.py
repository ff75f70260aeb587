"""course_utils.finetuning.unsloth_backend without a GPU: it says why the Unsloth path cannot run, never imports unsloth, and
refuses devices other than CUDA. (The Unsloth path itself needs a CUDA GPU and was not run here.)"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from course_utils.course import paths, release, sources
from course_utils.finetuning import unsloth_backend


def test_importing_the_module_imports_neither_unsloth_nor_transformers():
    code = ("import sys, course_utils.finetuning.unsloth_backend as u; "
            "print(sorted(m for m in ('unsloth', 'transformers', 'peft', 'trl') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=paths.REPO_ROOT,
                          check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine Unsloth may be available")
def test_without_a_gpu_it_is_unavailable_with_the_reason(capsys):
    status = unsloth_backend.activate()
    assert not status.available and "CUDA" in status.reason
    assert "NOT used" in str(status) and "PEFT" in str(status)
    status.instead("load a pre-quantized checkpoint")
    assert "it would: load a pre-quantized checkpoint." in capsys.readouterr().out
    assert "unsloth" not in sys.modules


def test_the_cpu_and_mps_never_take_the_unsloth_path(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(unsloth_backend, "unsloth_installed", lambda: True)
    for device in ("cpu", "mps"):
        reason = unsloth_backend.why_not_here(device)
        assert reason is not None and repr(device) in reason
        assert not unsloth_backend.activate(device).available
    assert unsloth_backend.why_not_here("cuda") is None
    with pytest.raises(ValueError, match="CUDA GPU, not on 'cpu'"):
        unsloth_backend.require_cuda("cpu")
    unsloth_backend.require_cuda("cuda:0")


def test_a_gpu_without_the_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(unsloth_backend, "unsloth_installed", lambda: False)
    assert ".[gpu]" in unsloth_backend.why_not_here("cuda")


def test_status_text_warns_when_patched_libraries_came_first(capsys):
    late = unsloth_backend.UnslothStatus(True, "unsloth 2026.1 on a GPU", ("transformers",))
    assert "restart the runtime" in str(late)
    assert "restart" not in str(unsloth_backend.UnslothStatus(True, "ok", ()))
    late.instead("anything")
    assert capsys.readouterr().out == ""  # on the Unsloth path there is nothing to explain


def test_versions_and_save_calls_tables():
    rows = {r["package"]: r["version"] for r in unsloth_backend.versions()}
    assert rows["torch"] == torch.__version__
    assert "unsloth" in rows and "gguf" in rows and "llama_cpp_python" in rows
    calls = unsloth_backend.unsloth_save_calls("out", "me/model")
    assert [c["format"] for c in calls][:3] == ["LoRA adapter", "merged 16-bit", "GGUF"]
    assert any("push_to_hub_gguf" in c["Unsloth call"] and "me/model" in c["Unsloth call"] for c in calls)


def test_chat_markers_come_from_the_template():
    tokenizer = sources.load_tokenizer("tiny-llama")
    instruction, response = unsloth_backend.chat_markers(tokenizer)
    assert instruction == "<|user|>" and response == "<|assistant|>"


def test_setup_cell_keeps_colabs_torch_with_or_without_extras():
    with_gpu = release.setup_cell_source(("gpu",))
    assert "[gpu]" in with_gpu and "keep_colab.txt" in with_gpu
    assert "keep_colab.txt" in release.setup_cell_source()
    compile(with_gpu, "setup", "exec")
