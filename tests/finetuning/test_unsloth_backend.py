"""course_utils.finetuning.unsloth_backend without a GPU: it says why the Unsloth path cannot run, never imports unsloth, and
refuses devices other than CUDA. (The Unsloth path itself needs a CUDA GPU and was not run here.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from course_utils.course import release
from course_utils.finetuning import unsloth_backend
from course_utils.ground import paths, sources


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


class _FakeUnslothModel:
    """A model whose save_pretrained_gguf fails the way unsloth_zoo's does offline, or writes one file."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def save_pretrained_gguf(self, folder, tokenizer, quantization_method="q8_0"):
        print("save_pretrained_gguf started")
        if self.fail:
            raise RuntimeError("Unsloth: Failed to download llama.cpp\nsecond line of the traceback's message")
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"model.{quantization_method.upper()}.gguf").write_bytes(b"GGUF")


def test_a_failing_save_pretrained_gguf_is_announced_then_one_line(tmp_path, capsys):
    with unsloth_backend.ExplainedGgufSave(tmp_path / "gguf") as attempt:
        _FakeUnslothModel(fail=True).save_pretrained_gguf(str(tmp_path / "gguf"), None, quantization_method="q8_0")
    out = capsys.readouterr().out
    assert out.index("downloads and builds llama.cpp") < out.index("save_pretrained_gguf started")
    assert attempt.error == "RuntimeError: Unsloth: Failed to download llama.cpp" and attempt.files == []
    assert "save_pretrained_gguf failed (RuntimeError: Unsloth: Failed to download llama.cpp)" in out
    assert "second line" not in out


def test_a_working_save_pretrained_gguf_lists_its_files(tmp_path, capsys):
    with unsloth_backend.ExplainedGgufSave(tmp_path / "gguf") as attempt:
        _FakeUnslothModel(fail=False).save_pretrained_gguf(str(tmp_path / "gguf"), None)
    assert attempt.error is None and attempt.files == ["model.Q8_0.gguf"]
    assert "Unsloth's own GGUF: model.Q8_0.gguf" in capsys.readouterr().out
    # a student's interrupt still stops the cell
    with pytest.raises(KeyboardInterrupt), unsloth_backend.ExplainedGgufSave(tmp_path / "gguf"):
        raise KeyboardInterrupt


def test_notebook_06_runs_save_pretrained_gguf_only_inside_the_explained_block():
    nb = release.read_notebook(paths.REPO_ROOT / "solutions" / "06_unsloth_and_your_mac.ipynb")
    calls = [(cell.source, line) for cell in nb.cells if cell.cell_type == "code"
             for line in cell.source.splitlines() if line.strip().startswith("model.save_pretrained_gguf(")]
    assert calls, "notebook 06 no longer calls model.save_pretrained_gguf"
    for source, line in calls:
        before = source.splitlines()[source.splitlines().index(line) - 1]
        assert before.strip().startswith("with unsloth_backend.ExplainedGgufSave("), line
