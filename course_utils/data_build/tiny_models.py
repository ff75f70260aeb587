"""The tiny checkpoints in data/models/, trained by the workbook's own loop and saved with ``save_pretrained``.

* ``tiny-gpt2``          GPT-2 architecture (LayerNorm, GELU, learned positions, tied embeddings), pretrained.
* ``tiny-llama``         Llama architecture (RMSNorm, SwiGLU, RoPE, grouped-query attention), pretrained; the
                         distillation teacher and the base model for fine-tuning.
* ``tiny-llama-student`` half of tiny-llama's layers (evenly spread from first to last, as DistilBERT chose), then distilled
                         from tiny-llama with soft targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from course_utils.training.distill import distillation_loss, init_student_from_teacher
from course_utils.training.text_data import SlidingWindowDataset, make_loader
from course_utils.training.train import (
    TrainConfig,
    TrainExtras,
    TrainState,
    evaluate,
    logits_of,
    make_train_loader,
    train,
)

CONTEXT = 256      # max_position_embeddings of every tiny model
WINDOW = 128       # training sequence length
BATCH = 16
# Every weight dimension is a multiple of this, as in real checkpoints: kernels that tile matrices (bitsandbytes'
# packed 4-bit CPU kernel, tensor cores, GGUF's 32-value blocks) assume it, and an odd width takes another code path.
MULTIPLE_OF = 64


def mlp_width(hidden: int, multiple_of: int = MULTIPLE_OF) -> int:
    """Llama's SwiGLU width: 2/3 of 4 x hidden (the same parameters as a 4x GELU MLP), rounded up to ``multiple_of``.

    Meta's reference Llama code rounds with ``multiple_of = 256``; on a 128-wide model that would give 512, so
    the tiny models use 64 (128 -> 341 -> 384).
    """
    return -(-int(8 * hidden / 3) // multiple_of) * multiple_of


@dataclass(frozen=True)
class TinySpec:
    name: str
    architecture: str          # "gpt2" or "llama"
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    steps: int
    lr: float
    description: str


TINY_GPT2 = TinySpec("tiny-gpt2", "gpt2", hidden=128, layers=4, heads=4, kv_heads=4, steps=300, lr=3e-3,
                     description="GPT-2 architecture, pretrained on the story corpus")
TINY_LLAMA = TinySpec("tiny-llama", "llama", hidden=128, layers=4, heads=4, kv_heads=2, steps=500, lr=3e-3,
                      description="Llama architecture (GQA), pretrained on the story corpus; teacher and base model")
TINY_LLAMA_STUDENT = TinySpec("tiny-llama-student", "llama", hidden=128, layers=2, heads=4, kv_heads=2, steps=100,
                              lr=1e-3, description="half of tiny-llama's layers, distilled from tiny-llama")


def make_config(spec: TinySpec, tokenizer):
    """A transformers config for ``spec`` with the tokenizer's special token ids."""
    from transformers import GPT2Config, LlamaConfig

    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    if spec.architecture == "gpt2":
        return GPT2Config(vocab_size=len(tokenizer), n_positions=CONTEXT, n_embd=spec.hidden, n_layer=spec.layers,
                          n_head=spec.heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids)
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=spec.hidden, intermediate_size=mlp_width(spec.hidden),
                       num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
                       num_key_value_heads=spec.kv_heads, max_position_embeddings=CONTEXT,
                       tie_word_embeddings=False, **ids)


def make_model(spec: TinySpec, tokenizer, seed: int) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(make_config(spec, tokenizer))


def _loaders(train_ids: list[int], val_ids: list[int], seed: int):
    train_set = SlidingWindowDataset(train_ids, WINDOW)
    val_set = SlidingWindowDataset(val_ids, WINDOW)
    return make_train_loader(train_set, BATCH, seed=seed), make_loader(val_set, BATCH, shuffle=False, drop_last=False)


def _train_config(spec: TinySpec) -> TrainConfig:
    return TrainConfig(max_steps=spec.steps, lr=spec.lr, min_lr=spec.lr / 10, warmup_steps=20,
                       eval_every=spec.steps, eval_batches=1000)


def pretrain(spec: TinySpec, tokenizer, train_ids: list[int], val_ids: list[int], seed: int,
             progress: bool = True) -> tuple[torch.nn.Module, TrainState]:
    """Train ``spec`` from scratch with the workbook's loop; returns the model and its training state."""
    model = make_model(spec, tokenizer, seed)
    train_loader, val_loader = _loaders(train_ids, val_ids, seed)
    state, _ = train(model, train_loader, val_loader, _train_config(spec), progress=progress)
    return model.eval(), state


def distill(spec: TinySpec, teacher: torch.nn.Module, train_ids: list[int], val_ids: list[int], seed: int,
            alpha: float = 0.5, temperature: float = 2.0, progress: bool = True
            ) -> tuple[torch.nn.Module, TrainState]:
    """Initialise the student from every other teacher layer, then train it on labels plus soft targets."""
    teacher.eval()
    student = init_student_from_teacher(teacher, spec.layers)
    train_loader, val_loader = _loaders(train_ids, val_ids, seed)

    def kd_loss(model, inputs, targets):
        with torch.no_grad():
            teacher_logits = logits_of(teacher(inputs))
        return distillation_loss(logits_of(model(inputs)), teacher_logits, targets, alpha=alpha,
                                 temperature=temperature)

    torch.manual_seed(seed)
    state, _ = train(student, train_loader, val_loader, _train_config(spec), progress=progress,
                     extras=TrainExtras(loss_fn=kd_loss))
    return student.eval(), state


def validation_loss(model: torch.nn.Module, val_ids: list[int]) -> float:
    """Mean next-token loss of ``model`` over every validation window."""
    loader = make_loader(SlidingWindowDataset(val_ids, WINDOW), BATCH, shuffle=False, drop_last=False)
    return evaluate(model, loader, "cpu")


def save_tiny_model(model: torch.nn.Module, tokenizer, folder: Path) -> None:
    """``save_pretrained`` the model (safetensors), its generation defaults and the tokenizer into ``folder``."""
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, do_sample=True, temperature=0.8, top_k=40,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # transformers writes the weights through a private temporary file (mode 600); data/ is read by everyone,
    # the grader's sandbox user included.
    for path in Path(folder).iterdir():
        path.chmod(0o644)


def sample_text(model: torch.nn.Module, tokenizer, prompt: str, max_new_tokens: int = 40) -> str:
    """Greedy continuation of ``prompt`` (deterministic, for the data card)."""
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0], skip_special_tokens=True)


def describe(model: torch.nn.Module, state: TrainState, spec: TinySpec, val_loss: float) -> dict[str, Any]:
    return {
        "architecture": type(model).__name__,
        "description": spec.description,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_steps": spec.steps,
        "tokens_seen": state.tokens_seen,
        "final_train_loss": round(state.history.train_loss[-1], 4),
        "validation_loss": round(val_loss, 4),
        "train_seconds": round(state.history.seconds, 1),
    }
