"""The size-defining config values of the models the course talks about, and what they add up to.

Every spec copies the fields of the model's public ``config.json`` on the Hugging Face Hub that decide its size
(hidden size, layers, heads, vocabulary, tied embeddings); the Llama-2-7B, Llama-3-8B and Gemma-2B values also
appear in the course documents. Nothing here is downloaded: :func:`model_size` builds the architecture
with ``AutoModelForCausalLM.from_config`` on PyTorch's ``meta`` device (shapes without memory) and counts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from course_utils.reporting.course_documents import EXAM_NOTES, PRETRAINING_LECTURE


@dataclass(frozen=True)
class ModelSpec:
    """A model by name: its hub id and the ``config.json`` fields that decide its size."""

    name: str
    hub_id: str
    config: Mapping[str, Any]  # must include "model_type"
    source: str  # where the numbers come from

    def build_config(self) -> Any:
        """The transformers config object (``AutoConfig.for_model``), offline."""
        from transformers import AutoConfig

        values = dict(self.config)
        return AutoConfig.for_model(values.pop("model_type"), **values)


def _llama_like(model_type: str, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int,
                vocab: int, context: int, tied: bool, **extra: Any) -> dict[str, Any]:
    return {"model_type": model_type, "hidden_size": hidden, "intermediate_size": intermediate,
            "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
            "vocab_size": vocab, "max_position_embeddings": context, "tie_word_embeddings": tied, **extra}


MODEL_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        # config.json of meta-llama/Llama-2-7b-hf; the exam-question notes and the pretraining lecture print the same.
        ModelSpec("Llama-2-7B", "meta-llama/Llama-2-7b-hf",
                  _llama_like("llama", 4096, 11008, 32, 32, 32, 32000, 4096, False),
                  f"config.json of meta-llama/Llama-2-7b-hf (also in the {EXAM_NOTES} and the {PRETRAINING_LECTURE})"),
        # config.json of meta-llama/Meta-Llama-3-8B. The pretraining lecture shows the same sizes (with Llama 3.1's long-context
        # rope settings, which change no parameter). rope_theta changes no size either; notebook 02 compares it.
        ModelSpec("Llama-3-8B", "meta-llama/Meta-Llama-3-8B",
                  _llama_like("llama", 4096, 14336, 32, 32, 8, 128256, 8192, False, rope_theta=500000.0),
                  f"config.json of meta-llama/Meta-Llama-3-8B (sizes also in the {PRETRAINING_LECTURE})"),
        # config.json of mistralai/Mistral-7B-v0.1 (sliding-window attention over 4096 tokens).
        ModelSpec("Mistral-7B-v0.1", "mistralai/Mistral-7B-v0.1",
                  _llama_like("mistral", 4096, 14336, 32, 32, 8, 32000, 32768, False, sliding_window=4096),
                  "config.json of mistralai/Mistral-7B-v0.1"),
        # config.json of microsoft/Phi-3-mini-4k-instruct (fused qkv_proj and gate_up_proj layers).
        ModelSpec("Phi-3-mini-4k", "microsoft/Phi-3-mini-4k-instruct",
                  _llama_like("phi3", 3072, 8192, 32, 32, 32, 32064, 4096, False),
                  "config.json of microsoft/Phi-3-mini-4k-instruct"),
        # config.json of google/gemma-2b (one key/value head, head_dim 256); also printed in the pretraining lecture.
        ModelSpec("Gemma-2B", "google/gemma-2b",
                  _llama_like("gemma", 2048, 16384, 18, 8, 1, 256000, 8192, True, head_dim=256),
                  f"config.json of google/gemma-2b (also in the {PRETRAINING_LECTURE})"),
        # config.json of Qwen/Qwen2.5-0.5B (biases on q, k and v).
        ModelSpec("Qwen2.5-0.5B", "Qwen/Qwen2.5-0.5B",
                  _llama_like("qwen2", 896, 4864, 24, 14, 2, 151936, 32768, True),
                  "config.json of Qwen/Qwen2.5-0.5B"),
        # config.json of meta-llama/Llama-3.2-1B.
        ModelSpec("Llama-3.2-1B", "meta-llama/Llama-3.2-1B",
                  _llama_like("llama", 2048, 8192, 16, 32, 8, 128256, 131072, True, head_dim=64),
                  "config.json of meta-llama/Llama-3.2-1B"),
        # config.json of HuggingFaceTB/SmolLM2-360M.
        ModelSpec("SmolLM2-360M", "HuggingFaceTB/SmolLM2-360M",
                  _llama_like("llama", 960, 2560, 32, 15, 5, 49152, 8192, True),
                  "config.json of HuggingFaceTB/SmolLM2-360M"),
        # config.json of HuggingFaceTB/SmolLM2-135M.
        ModelSpec("SmolLM2-135M", "HuggingFaceTB/SmolLM2-135M",
                  _llama_like("llama", 576, 1536, 30, 9, 3, 49152, 8192, True),
                  "config.json of HuggingFaceTB/SmolLM2-135M"),
        # config.json of openai-community/gpt2 (the 124M GPT-2), in GPT-2's own field names.
        ModelSpec("GPT-2", "openai-community/gpt2",
                  {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024,
                   "vocab_size": 50257, "tie_word_embeddings": True},
                  "config.json of openai-community/gpt2"),
    )
}


def get_spec(model: str | ModelSpec) -> ModelSpec:
    """The :class:`ModelSpec` called ``model`` (a name from :data:`MODEL_SPECS` or its hub id)."""
    if isinstance(model, ModelSpec):
        return model
    for spec in MODEL_SPECS.values():
        if model in (spec.name, spec.hub_id) or str(model).lower() == spec.name.lower():
            return spec
    raise KeyError(f"Unknown model {model!r}; known: {', '.join(MODEL_SPECS)}. "
                   "To size another model, build a ModelSpec with the fields of its config.json.")


@dataclass(frozen=True)
class ModelSize:
    """What a model's architecture adds up to, counted on the meta device."""

    name: str
    total_params: int
    block_linear_params: int  # weights of the linear layers inside the blocks: what 8/4-bit loading quantizes
    linear_layers: tuple[tuple[str, int, int], ...]  # (module name, d_in, d_out) of those linear layers
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    max_context: int
    tied_embeddings: bool

    @property
    def other_params(self) -> int:
        """Embeddings, norms, biases and an untied output layer: kept in 16-bit when the rest is quantized."""
        return self.total_params - self.block_linear_params

    @property
    def attention(self) -> str:
        """'MHA' (a K/V head per query head), 'GQA' (groups share one) or 'MQA' (a single K/V head)."""
        if self.n_kv_heads == self.n_heads:
            return "MHA"
        return "MQA" if self.n_kv_heads == 1 else "GQA"


_SIZES: dict[str, ModelSize] = {}


def model_size(model: str | ModelSpec) -> ModelSize:
    """Count the parameters of ``model`` by building it on the meta device (cached; about 0.1 s per model)."""
    spec = get_spec(model)
    key = spec.name + json.dumps(dict(spec.config), sort_keys=True)
    if key not in _SIZES:
        _SIZES[key] = _count(spec)
    return _SIZES[key]


def _count(spec: ModelSpec) -> ModelSize:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    config = spec.build_config()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())  # parameters() counts a tied weight once
    output = model.get_output_embeddings()
    linear = []
    for name, module in model.named_modules():
        if module is output:
            continue  # bitsandbytes and peft's "all-linear" both leave the output layer alone
        if isinstance(module, torch.nn.Linear):
            linear.append((name, module.in_features, module.out_features))
        elif isinstance(module, Conv1D):  # GPT-2's linear layers, weight stored as (d_in, d_out)
            d_in, d_out = module.weight.shape
            linear.append((name, int(d_in), int(d_out)))
    n_heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    return ModelSize(
        name=spec.name,
        total_params=int(total),
        block_linear_params=sum(d_in * d_out for _, d_in, d_out in linear),
        linear_layers=tuple(linear),
        n_layers=config.num_hidden_layers,
        n_heads=n_heads,
        n_kv_heads=getattr(config, "num_key_value_heads", None) or n_heads,
        head_dim=int(head_dim),
        hidden_size=config.hidden_size,
        vocab_size=config.vocab_size,
        max_context=config.max_position_embeddings,
        tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
    )


ALL_LINEAR = "all-linear"


def lora_adapter_params(model: str | ModelSpec, r: int, target_modules: str | tuple[str, ...] = ALL_LINEAR) -> int:
    """Trainable LoRA parameters: ``r * (d_in + d_out)`` for every targeted linear layer (A is r x d_in, B d_out x r).

    ``target_modules`` is ``"all-linear"`` (every linear layer in the blocks, as QLoRA does) or module-name
    suffixes such as ``("q_proj", "v_proj")``.
    """
    if not isinstance(r, int) or r < 1:
        raise ValueError(f"LoRA rank r must be a positive integer, got {r!r}")
    size = model_size(model)
    if target_modules == ALL_LINEAR:
        chosen = size.linear_layers
    else:
        targets = (target_modules,) if isinstance(target_modules, str) else tuple(target_modules)
        chosen = tuple(layer for layer in size.linear_layers if layer[0].split(".")[-1] in targets)
        if not chosen:
            names = sorted({layer[0].split(".")[-1] for layer in size.linear_layers})
            raise ValueError(f"No linear layer of {size.name} is called {targets}; its linear layers are {names}.")
    return sum(r * (d_in + d_out) for _, d_in, d_out in chosen)


def spec_table(models: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """One row per model: computed parameters and the attention geometry that sizes the KV cache."""
    rows = []
    for name in models or tuple(MODEL_SPECS):
        size = model_size(name)
        rows.append({"model": size.name, "parameters": size.total_params, "layers": size.n_layers,
                     "hidden": size.hidden_size, "heads": size.n_heads, "kv heads": size.n_kv_heads,
                     "head dim": size.head_dim, "attention": size.attention, "vocab": size.vocab_size,
                     "tied emb.": "yes" if size.tied_embeddings else "no", "max context": size.max_context})
    return rows
