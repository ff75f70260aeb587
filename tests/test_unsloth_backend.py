"""course_utils.unsloth_backend without a GPU: it says why it cannot run, never imports unsloth, and leaves
``backend="auto"`` on PEFT. (The Unsloth path itself needs a CUDA GPU and was not run here.)"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from course_utils import finetune, paths, release, unsloth_backend


@pytest.fixture
def clean_registry():
    saved_backends, saved_order = dict(finetune.BACKENDS), list(finetune.AUTO_ORDER)
    yield
    finetune.BACKENDS.clear()
    finetune.BACKENDS.update(saved_backends)
    finetune.AUTO_ORDER[:] = saved_order


def test_importing_the_module_imports_neither_unsloth_nor_transformers():
    code = ("import sys, course_utils.unsloth_backend as u; "
            "print(sorted(m for m in ('unsloth', 'transformers', 'peft', 'trl') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=paths.REPO_ROOT,
                          check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine Unsloth may be available")
def test_without_a_gpu_it_is_unavailable_with_the_reason(clean_registry):
    ok, why = unsloth_backend.UnslothBackend().available()
    assert not ok and "GPU" in why
    status = unsloth_backend.activate()
    assert not status.available and status.auto_backend == "peft"
    assert "unsloth" in finetune.BACKENDS and finetune.AUTO_ORDER[0] == "unsloth"
    assert "NOT used" in str(status) and "peft" in str(status)
    with pytest.raises(RuntimeError, match="not available here"):
        finetune.get_backend("unsloth")
    assert finetune.get_backend("auto").name == "peft"


def test_a_gpu_without_the_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(unsloth_backend, "_gpu_reason", lambda: None)
    monkeypatch.setattr(unsloth_backend, "unsloth_installed", lambda: False)
    ok, why = unsloth_backend.UnslothBackend().available()
    assert not ok and ".[gpu]" in why


def test_an_apple_gpu_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    reason = unsloth_backend._gpu_reason()
    assert reason is not None and "Apple" in reason


def test_status_text_warns_when_patched_libraries_came_first():
    late = unsloth_backend.UnslothStatus(True, "unsloth 2026.1 on a GPU", ("transformers",), "unsloth")
    assert "restart the runtime" in str(late)
    assert "restart" not in str(unsloth_backend.UnslothStatus(True, "ok", (), "unsloth"))


def test_versions_and_save_calls_tables():
    rows = {r["package"]: r["version"] for r in unsloth_backend.versions()}
    assert rows["torch"] == torch.__version__
    assert "unsloth" in rows and "gguf" in rows
    calls = unsloth_backend.unsloth_save_calls("out", "me/model")
    assert [c["format"] for c in calls][:3] == ["LoRA adapter", "merged 16-bit", "GGUF"]
    assert any("push_to_hub_gguf" in c["Unsloth call"] and "me/model" in c["Unsloth call"] for c in calls)


def test_sft_trainer_keeps_our_labels(tmp_path):
    """The Unsloth path trains with TRL's SFTTrainer on our tokenized, masked data: it must not re-tokenize."""
    from course_utils import sources

    model, tokenizer = finetune.load_model("tiny-llama", device="cpu", backend="peft")
    model = finetune.add_adapters(model, finetune.LoraSettings(r=4, alpha=8))
    rows = sources.load_text_dataset("zorbish", "train").select(range(8))
    data = finetune.format_dataset(rows, tokenizer, chat=False)
    settings = finetune.SFTSettings(max_steps=1, batch_size=4, learning_rate=1e-3, warmup_steps=0)
    args = settings.training_arguments(str(tmp_path), torch.device("cpu"))
    trainer = unsloth_backend.sft_trainer(model, args, data, None, finetune.CompletionCollator(tokenizer.pad_token_id), [],
                                          tokenizer=tokenizer)
    assert type(trainer).__name__ == "SFTTrainer"
    assert trainer.train_dataset[0]["labels"] == data[0]["labels"]
    assert trainer.args.max_steps == 1 and trainer.args.learning_rate == 1e-3


def test_setup_cell_keeps_colabs_torch_with_or_without_extras():
    with_gpu = release.setup_cell_source(("gpu",))
    assert "[gpu]" in with_gpu and "keep_colab_torch" in with_gpu
    assert "keep_colab_torch" in release.setup_cell_source()
    compile(with_gpu, "setup", "exec")
