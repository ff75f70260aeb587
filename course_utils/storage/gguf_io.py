"""Writing a Llama checkpoint as GGUF, the single-file format of llama.cpp, Ollama and LM Studio, by hand.

What a converter such as llama.cpp's ``convert_hf_to_gguf.py`` does, in one file we can read and test:

* **Names.** transformers' ``model.layers.3.self_attn.q_proj.weight`` is ``blk.3.attn_q.weight`` in GGUF
  (:data:`LLAMA_NAMES`, :func:`gguf_name`).
* **Layout.** transformers rotates the two *halves* of each query/key head (``rotate_half``); llama.cpp's Llama
  kernel rotates *adjacent pairs*. The converter reorders the rows of ``q_proj`` and ``k_proj`` so that the pairs
  line up (:func:`permute_qk`); a reader undoes it (:func:`unpermute_qk`).
* **Numbers.** Each 2-D weight is stored in the file's type: F32, F16, or Q8_0 (blocks of 32 values as one fp16
  scale and 32 signed bytes, :func:`quantize_q8_0`). 1-D tensors (the norms) stay F32, and a weight whose rows
  do not split into whole blocks falls back to F16, as in llama.cpp.
* **Metadata.** The architecture's sizes under ``llama.*`` keys and the tokenizer under ``tokenizer.ggml.*``:
  for a byte-level BPE tokenizer its vocabulary, merges, token types and special token ids, and the chat template.

The ``gguf`` package (llama.cpp's own Python writer) lays out the bytes; every choice above is ours. K-quants
(``q4_k_m`` and friends) need llama.cpp's ``llama-quantize``: see :mod:`course_utils.serving.export`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

Q8_0_BLOCK = 32  # values per Q8_0 block
Q8_0_BLOCK_BYTES = 2 + Q8_0_BLOCK  # one fp16 scale + 32 int8 codes
FILE_TYPES = ("f32", "f16", "q8_0")  # what this module writes; k-quants need llama.cpp

# transformers module name (inside the model) -> GGUF tensor name; {i} is the block number.
LLAMA_NAMES: dict[str, str] = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
    "model.layers.{i}.input_layernorm": "blk.{i}.attn_norm",
    "model.layers.{i}.self_attn.q_proj": "blk.{i}.attn_q",
    "model.layers.{i}.self_attn.k_proj": "blk.{i}.attn_k",
    "model.layers.{i}.self_attn.v_proj": "blk.{i}.attn_v",
    "model.layers.{i}.self_attn.o_proj": "blk.{i}.attn_output",
    "model.layers.{i}.post_attention_layernorm": "blk.{i}.ffn_norm",
    "model.layers.{i}.mlp.gate_proj": "blk.{i}.ffn_gate",
    "model.layers.{i}.mlp.up_proj": "blk.{i}.ffn_up",
    "model.layers.{i}.mlp.down_proj": "blk.{i}.ffn_down",
}
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")

# ggml type ids and GGUF "file type" ids (gguf.GGMLQuantizationType / gguf.LlamaFileType), for the types we write.
GGML_TYPE = {"f32": 0, "f16": 1, "q8_0": 8}
FILE_TYPE_ID = {"f32": 0, "f16": 1, "q8_0": 7}


# ================================================================================================ names, layout
def gguf_name(hf_name: str) -> str:
    """The GGUF name of a transformers Llama tensor (``model.layers.0.mlp.up_proj.weight`` -> ``blk.0.ffn_up.weight``)."""
    module, _, suffix = hf_name.rpartition(".")
    layer = _LAYER.match(module)
    key, index = (f"model.layers.{{i}}.{layer.group(2)}", layer.group(1)) if layer else (module, None)
    if key not in LLAMA_NAMES:
        raise KeyError(f"{hf_name!r} is not a tensor of a Llama model this writer knows "
                       f"(known modules: {', '.join(sorted(LLAMA_NAMES))}).")
    return LLAMA_NAMES[key].format(i=index) + "." + suffix


def permute_qk(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """Reorder the rows of a query or key projection from transformers' layout to llama.cpp's.

    Within each head, transformers pairs row ``j`` with row ``j + head_dim/2`` for the rotation; llama.cpp pairs
    rows ``2j`` and ``2j + 1``. ``n_head`` is the number of heads of this projection (the key/value heads for
    ``k_proj`` under grouped-query attention).
    """
    rows = weight.shape[0]
    if rows % (2 * n_head):
        raise ValueError(f"{rows} rows do not split into {n_head} heads of an even size.")
    half = rows // n_head // 2
    return weight.reshape(n_head, 2, half, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


def unpermute_qk(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """The inverse of :func:`permute_qk`: llama.cpp's row order back to transformers'."""
    rows = weight.shape[0]
    half = rows // n_head // 2
    return weight.reshape(n_head, half, 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


# ================================================================================================ Q8_0
def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    """C's ``roundf``: halves go away from zero (``torch.round`` sends them to the even neighbour)."""
    magnitude = x.abs()
    floored = magnitude.floor()
    return torch.sign(x) * (floored + torch.floor(2 * (magnitude - floored)))


def quantize_q8_0(x: torch.Tensor) -> np.ndarray:
    """Q8_0 blocks of ``x`` (rows a multiple of 32 long): per block an fp16 scale ``d = max|x| / 127`` and
    ``round(x / d)`` as int8. Returns ``uint8`` of shape ``(rows..., row_len // 32 * 34)``, ggml's layout."""
    values = x.detach().to(torch.float32).cpu()
    if values.shape[-1] % Q8_0_BLOCK:
        raise ValueError(f"Q8_0 needs rows that are a multiple of {Q8_0_BLOCK} long, got {values.shape[-1]}.")
    blocks = values.reshape(-1, Q8_0_BLOCK)
    scale = blocks.abs().amax(dim=1, keepdim=True) / 127
    inverse = torch.where(scale == 0, torch.zeros_like(scale), 1 / scale)
    codes = _round_half_away(blocks * inverse).to(torch.int8)
    raw = np.concatenate([scale.to(torch.float16).numpy().view(np.uint8), codes.numpy().view(np.uint8)], axis=1)
    return raw.reshape(*values.shape[:-1], values.shape[-1] // Q8_0_BLOCK * Q8_0_BLOCK_BYTES)


def dequantize_q8_0(raw: np.ndarray, shape: Sequence[int]) -> torch.Tensor:
    """The float32 tensor of ``shape`` that Q8_0 bytes stand for: each code times its block's fp16 scale."""
    blocks = np.ascontiguousarray(raw).reshape(-1, Q8_0_BLOCK_BYTES)
    scale = torch.from_numpy(blocks[:, :2].copy().view(np.float16).astype(np.float32))
    codes = torch.from_numpy(blocks[:, 2:].copy().view(np.int8).astype(np.float32))
    return (codes * scale).reshape(tuple(shape))


def tensor_bytes(shape: Sequence[int], file_type: str) -> int:
    """Bytes a tensor of this (PyTorch) shape takes in a GGUF of ``file_type``, by the rules of :func:`write_gguf`."""
    n = int(np.prod(shape))
    ggml_type = _tensor_type(torch.empty(tuple(shape), device="meta"), file_type)
    if ggml_type == "q8_0":
        return n // Q8_0_BLOCK * Q8_0_BLOCK_BYTES
    return n * (4 if ggml_type == "f32" else 2)


def bits_per_weight(file_type: str) -> float:
    """Stored bits per weight of a ggml type (block bytes x 8 / block size): f16 16, q8_0 8.5, q4_k 4.5, ..."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, nbytes = GGML_QUANT_SIZES[GGMLQuantizationType[file_type.upper()]]
    return nbytes * 8 / block


# ================================================================================================ tokenizer
def tokenizer_metadata(tokenizer: Any) -> dict[str, Any]:
    """The ``tokenizer.ggml.*`` values of a byte-level BPE tokenizer (GPT-2 style, as the tiny models use)."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    model = state["model"]
    if model.get("type") != "BPE" or (state.get("pre_tokenizer") or {}).get("type") != "ByteLevel":
        raise ValueError("This writer handles byte-level BPE tokenizers (GPT-2 style); this one is "
                         f"{model.get('type')} with pre-tokenizer {(state.get('pre_tokenizer') or {}).get('type')}. "
                         "Use llama.cpp's convert_hf_to_gguf.py for it.")
    vocab = tokenizer.get_vocab()
    tokens = [""] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    special = {t["content"] for t in state.get("added_tokens", []) if t.get("special")}
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return {
        "model": "gpt2",  # llama.cpp's name for byte-level BPE
        "pre": "gpt-2",  # split the text with GPT-2's regular expression before merging
        "tokens": tokens,
        "token_type": [3 if t in special else 1 for t in tokens],  # 3 = CONTROL, 1 = NORMAL
        "merges": merges,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "padding_token_id": tokenizer.pad_token_id,
        "add_bos_token": False,  # these tokenizers add nothing to the text (no post-processor tokens)
        "chat_template": getattr(tokenizer, "chat_template", None),
    }


# ================================================================================================ writing
@dataclass(frozen=True)
class TensorRecord:
    """One tensor as written: its GGUF name, the transformers name, shape, ggml type and bytes."""

    name: str
    source: str
    shape: tuple[int, ...]
    ggml_type: str
    nbytes: int


@dataclass(frozen=True)
class GgufFile:
    """What :func:`write_gguf` wrote."""

    path: Path
    file_type: str
    tensors: list[TensorRecord]

    @property
    def bytes(self) -> int:
        return self.path.stat().st_size

    def type_counts(self) -> dict[str, int]:
        """How many tensors of each ggml type the file holds."""
        counts: dict[str, int] = {}
        for record in self.tensors:
            counts[record.ggml_type] = counts.get(record.ggml_type, 0) + 1
        return counts


def _tensor_type(tensor: torch.Tensor, file_type: str) -> str:
    """The ggml type a tensor gets in a file of ``file_type``: 1-D stays F32; Q8_0 falls back to F16 when the rows
    do not split into blocks of 32."""
    if tensor.ndim == 1 or file_type == "f32":
        return "f32"
    if file_type == "q8_0" and tensor.shape[-1] % Q8_0_BLOCK:
        return "f16"
    return file_type


def _encode(tensor: torch.Tensor, ggml_type: str) -> np.ndarray:
    values = tensor.detach().to(torch.float32).cpu()
    if ggml_type == "f32":
        return values.numpy()
    if ggml_type == "f16":
        return values.to(torch.float16).numpy()
    return quantize_q8_0(values)


def _finish(writer: Any, path: Path, file_type: str, records: list[TensorRecord]) -> GgufFile:
    """Write header, metadata and tensors in gguf's order, close the file, and describe what it holds."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return GgufFile(path, file_type, records)


def llama_tensors(model: Any, *, permute: bool = True) -> list[tuple[str, str, torch.Tensor]]:
    """``(gguf name, transformers name, tensor)`` for every weight, with q/k permuted for llama.cpp.

    A tied output layer is left out: llama.cpp then reuses ``token_embd`` (as transformers does when it reads the
    file back, because ``output.weight`` is missing).
    """
    config = model.config
    tied = bool(getattr(config, "tie_word_embeddings", False))
    out = []
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and tied:
            continue
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        name = gguf_name(hf_name)
        if permute and name.endswith("attn_q.weight"):
            tensor = permute_qk(tensor, config.num_attention_heads)
        elif permute and name.endswith("attn_k.weight"):
            tensor = permute_qk(tensor, config.num_key_value_heads)
        out.append((name, hf_name, tensor))
    return out


def write_gguf(model: Any, tokenizer: Any, path: str | Path, file_type: str = "f16", *, name: str | None = None,
               permute: bool = True, tensors: Mapping[str, torch.Tensor] | None = None) -> GgufFile:
    """Write a transformers Llama model and its tokenizer as one GGUF file (``f32``, ``f16`` or ``q8_0``).

    ``permute=False`` skips the q/k reordering: only to show what goes wrong without it. ``tensors`` (GGUF name ->
    tensor) replaces the model's own converted weights: a converter under test writes what it made, with the
    model's sizes and tokenizer around it.
    """
    import gguf

    if file_type not in FILE_TYPES:
        raise ValueError(f"file_type must be one of {FILE_TYPES}; k-quants such as q4_k_m need llama.cpp's "
                         "llama-quantize (course_utils.serving.export.quantize_with_llama_cpp).")
    config = model.config
    if config.model_type != "llama":
        raise ValueError(f"This writer knows the Llama architecture; the model is {config.model_type!r}. Use "
                         "llama.cpp's convert_hf_to_gguf.py (or Unsloth's save_pretrained_gguf) for it.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = getattr(config, "rope_parameters", None) or {}
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name or Path(getattr(config, "_name_or_path", "") or "model").name or "model")
    writer.add_file_type(FILE_TYPE_ID[file_type])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    if head_dim * config.num_attention_heads != config.hidden_size:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    meta = tokenizer_metadata(tokenizer)
    writer.add_tokenizer_model(meta["model"])
    writer.add_tokenizer_pre(meta["pre"])
    writer.add_token_list(meta["tokens"])
    writer.add_token_types(meta["token_type"])
    writer.add_token_merges(meta["merges"])
    for key, add in (("bos_token_id", writer.add_bos_token_id), ("eos_token_id", writer.add_eos_token_id),
                     ("padding_token_id", writer.add_pad_token_id)):
        if meta[key] is not None:
            add(int(meta[key]))
    writer.add_add_bos_token(meta["add_bos_token"])
    if meta["chat_template"]:
        writer.add_chat_template(meta["chat_template"])
    records = []
    converted = llama_tensors(model, permute=permute) if tensors is None else \
        [(gguf_tensor_name, "", tensor) for gguf_tensor_name, tensor in tensors.items()]
    for gguf_tensor_name, hf_name, tensor in converted:
        ggml_type = _tensor_type(tensor, file_type)
        data = _encode(tensor, ggml_type)
        if ggml_type == "q8_0":
            writer.add_tensor(gguf_tensor_name, data, raw_shape=data.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(gguf_tensor_name, data)
        records.append(TensorRecord(gguf_tensor_name, hf_name, tuple(tensor.shape), ggml_type, int(data.nbytes)))
    return _finish(writer, path, file_type, records)


# ================================================================================================ LoRA adapters
def lora_tensors(adapter_dir: str | Path, config: Any, *, permute: bool = True) -> list[tuple[str, torch.Tensor]]:
    """``(gguf name, tensor)`` of a PEFT LoRA adapter folder: ``blk.N.attn_q.weight.lora_a`` (A) and ``.lora_b`` (B).

    ``W0 + (alpha/r) B A`` must act on the rows llama.cpp reads, so the rows of B for ``attn_q`` and ``attn_k``
    are reordered like the base weights (:func:`permute_qk`); A acts on the inputs and stays as it is.
    """
    from safetensors.torch import load_file

    state = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    out = []
    for key, tensor in sorted(state.items()):
        module, _, part = key.removeprefix("base_model.model.").rpartition(".lora_")
        if part not in ("A.weight", "B.weight"):
            raise KeyError(f"{key!r} is not a LoRA A or B matrix of a linear layer (embedding adapters, DoRA and "
                           "bias training are not handled here).")
        name = gguf_name(module + ".weight")
        if permute and part == "B.weight" and name.endswith("attn_q.weight"):
            tensor = permute_qk(tensor, config.num_attention_heads)
        elif permute and part == "B.weight" and name.endswith("attn_k.weight"):
            tensor = permute_qk(tensor, config.num_key_value_heads)
        out.append((name + (".lora_a" if part == "A.weight" else ".lora_b"), tensor))
    return out


def lora_alpha_for_llama_cpp(adapter_config: dict[str, Any]) -> float:
    """The ``adapter.lora.alpha`` to write: llama.cpp scales B A by alpha / r, so rsLoRA's alpha / sqrt(r) needs
    alpha * sqrt(r) there."""
    if adapter_config.get("rank_pattern") or adapter_config.get("alpha_pattern") or adapter_config.get("use_dora"):
        raise ValueError("Per-layer ranks or alphas and DoRA are not handled by this writer; use llama.cpp's "
                         "convert_lora_to_gguf.py.")
    alpha, r = float(adapter_config["lora_alpha"]), int(adapter_config["r"])
    return alpha * r**0.5 if adapter_config.get("use_rslora") else alpha


def write_lora_gguf(adapter_dir: str | Path, config: Any, path: str | Path, file_type: str = "f32", *,
                    permute: bool = True) -> GgufFile:
    """Write a PEFT LoRA adapter as a GGUF adapter file, the format of llama.cpp's ``--lora`` (f32 or f16).

    ``config`` is the base model's configuration (its head counts give the q/k row order). The file holds only
    the A and B matrices and ``adapter.lora.alpha``; llama.cpp adds ``(alpha / r) B A x`` to every adapted layer of
    the base GGUF it is loaded with, whose architecture must be the same. ``permute=False`` skips reordering the
    rows of B: only to show what goes wrong without it.
    """
    import gguf

    if file_type not in ("f32", "f16"):
        raise ValueError(f"LoRA GGUF files here are f32 or f16, not {file_type!r}: the rank is rarely a whole number "
                         "of Q8_0 blocks.")
    adapter_config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, lora_alpha_for_llama_cpp(adapter_config))
    records = []
    for name, tensor in lora_tensors(adapter_dir, config, permute=permute):
        data = _encode(tensor, file_type)
        writer.add_tensor(name, data)
        records.append(TensorRecord(name, name, tuple(tensor.shape), file_type, int(data.nbytes)))
    return _finish(writer, path, file_type, records)


# ================================================================================================ reading back
def read_metadata(path: str | Path) -> dict[str, Any]:
    """The file's metadata keys and values (long arrays shortened to their length), read with gguf's reader."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    out: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        value = field.contents()
        out[key] = f"[{len(value)} items]" if isinstance(value, list) and len(value) > 8 else value
    return out


def tensor_table(path: str | Path) -> list[dict[str, Any]]:
    """Name, shape (as ggml writes it: fastest dimension first), type and bytes of each tensor in the file."""
    from gguf import GGUFReader

    return [{"tensor": t.name, "ggml shape": [int(d) for d in t.shape], "type": t.tensor_type.name,
             "bytes": int(t.n_bytes)} for t in GGUFReader(str(path)).tensors]


def load_with_transformers(path: str | Path, *, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """``(model, tokenizer)`` rebuilt from the GGUF file alone by transformers' own GGUF reader."""
    import warnings

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = Path(path)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Converting and de-quantizing GGUF tensors" bar for a small file
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return model.eval(), tokenizer


# A GGUF read back in float32 may differ from the source model's fp32 logits by the rounding of its weights:
# relative to the largest logit, fp16 keeps 11 significant bits (about 5e-4 per weight); Q8_0 keeps 8 bits per
# block of 32 (an error up to 1/254 of the block's largest value). Measured on the tiny model the differences are
# several times smaller than these bounds; a wrong layout (no q/k permutation) is far outside them.
GGUF_TOLERANCE: dict[str, float] = {"f32": 1e-5, "f16": 5e-3, "q8_0": 5e-2}
