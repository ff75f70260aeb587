"""course_utils.storage.gguf_io: names, the q/k permutation, Q8_0 bytes, and a file that an independent reader
(transformers' GGUF loader) turns back into the same model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_utils.ground import sources
from course_utils.storage import gguf_io


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = sources.load_causal_lm("tiny-llama", dtype=torch.float32, device="cpu", verbose=False)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def written(tiny, tmp_path_factory):
    model, tokenizer = tiny
    folder = tmp_path_factory.mktemp("gguf")
    return {t: gguf_io.write_gguf(model, tokenizer, folder / f"tiny-{t}.gguf", t) for t in ("f32", "f16", "q8_0")}


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


# ------------------------------------------------------------------------------------------------ names, layout
@pytest.mark.parametrize(("hf", "gguf"), [
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.layers.3.self_attn.k_proj.weight", "blk.3.attn_k.weight"),
    ("model.layers.12.mlp.down_proj.weight", "blk.12.ffn_down.weight"),
    ("model.layers.0.post_attention_layernorm.weight", "blk.0.ffn_norm.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
])
def test_gguf_names(hf, gguf):
    assert gguf_io.gguf_name(hf) == gguf


def test_unknown_tensor_names_are_refused():
    with pytest.raises(KeyError, match="not a tensor of a Llama model"):
        gguf_io.gguf_name("transformer.h.0.attn.c_attn.weight")


def test_unpermute_inverts_permute_and_odd_heads_are_refused():
    weight = torch.randn(48, 5)
    assert torch.equal(gguf_io.unpermute_qk(gguf_io.permute_qk(weight, 3), 3), weight)
    assert not torch.equal(gguf_io.permute_qk(weight, 3), weight)
    with pytest.raises(ValueError, match="even size"):
        gguf_io.permute_qk(torch.randn(9, 2), 3)


def _rope_halves(x, angles):
    """transformers' rotation: element j pairs with j + d/2."""
    half = x.shape[-1] // 2
    cos, sin = angles.cos().repeat(2), angles.sin().repeat(2)
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def _rope_pairs(x, angles):
    """llama.cpp's rotation: element 2j pairs with 2j + 1."""
    even, odd = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = even * angles.cos() - odd * angles.sin()
    out[..., 1::2] = even * angles.sin() + odd * angles.cos()
    return out


def test_permuted_rows_make_the_pairwise_rotation_compute_the_same_scores():
    # One head of a query and a key projection: the attention score after RoPE must not depend on the layout.
    torch.manual_seed(0)
    head_dim, hidden, n_head = 8, 6, 2
    wq, wk = torch.randn(n_head * head_dim, hidden), torch.randn(n_head * head_dim, hidden)
    x_q, x_k = torch.randn(hidden), torch.randn(hidden)
    angles_q, angles_k = torch.rand(head_dim // 2) * 3, torch.rand(head_dim // 2) * 3
    hf_q, hf_k = (wq @ x_q).view(n_head, head_dim), (wk @ x_k).view(n_head, head_dim)
    cpp_q = (gguf_io.permute_qk(wq, n_head) @ x_q).view(n_head, head_dim)
    cpp_k = (gguf_io.permute_qk(wk, n_head) @ x_k).view(n_head, head_dim)
    hf_scores = (_rope_halves(hf_q, angles_q) * _rope_halves(hf_k, angles_k)).sum(-1)
    cpp_scores = (_rope_pairs(cpp_q, angles_q) * _rope_pairs(cpp_k, angles_k)).sum(-1)
    unpermuted = (_rope_pairs(hf_q, angles_q) * _rope_pairs(hf_k, angles_k)).sum(-1)
    torch.testing.assert_close(cpp_scores, hf_scores)
    assert not torch.allclose(unpermuted, hf_scores, atol=1e-3)


# ------------------------------------------------------------------------------------------------ Q8_0
def test_q8_0_bytes_match_the_gguf_reference_quantizer():
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    torch.manual_seed(1)
    x = torch.randn(6, 64) * torch.tensor([0.01, 1.0, 30.0, 1.0, 1.0, 1.0]).unsqueeze(1)
    x[1, :32] = 0
    ours = gguf_io.quantize_q8_0(x)
    reference = quantize(x.numpy(), GGMLQuantizationType.Q8_0)
    assert ours.shape == reference.shape == (6, 68)
    assert np.array_equal(ours, reference)


def test_q8_0_round_trip_error_is_at_most_half_a_step():
    torch.manual_seed(2)
    x = torch.randn(4, 96)
    back = gguf_io.dequantize_q8_0(gguf_io.quantize_q8_0(x), x.shape)
    step = x.reshape(-1, 32).abs().amax(1, keepdim=True) / 127
    # half a step of rounding, plus the fp16 rounding of the scale (2**-11 relative) times codes up to 127
    assert ((back - x).reshape(-1, 32).abs() <= step * (0.5 + 127 * 2**-11)).all()
    with pytest.raises(ValueError, match="multiple of 32"):
        gguf_io.quantize_q8_0(torch.randn(3, 33))


def test_tensor_bytes_and_bits_per_weight():
    assert gguf_io.tensor_bytes((4096, 4096), "f16") == 4096 * 4096 * 2
    assert gguf_io.tensor_bytes((4096, 4096), "q8_0") == 4096 * 4096 // 32 * 34
    assert gguf_io.tensor_bytes((128, 341), "q8_0") == 128 * 341 * 2  # rows of 341 values: f16 fallback
    assert gguf_io.tensor_bytes((128,), "q8_0") == 128 * 4
    assert gguf_io.bits_per_weight("f16") == 16
    assert gguf_io.bits_per_weight("q8_0") == 8.5
    assert gguf_io.bits_per_weight("q4_k") == 4.5


# ------------------------------------------------------------------------------------------------ files
def test_written_files_account_for_every_tensor_byte(written, tiny):
    model, _ = tiny
    for file_type, f in written.items():
        assert f.path.exists() and f.file_type == file_type
        assert sum(r.nbytes for r in f.tensors) == sum(gguf_io.tensor_bytes(r.shape, file_type) for r in f.tensors)
        assert f.bytes > sum(r.nbytes for r in f.tensors)  # plus metadata
        assert {r.source for r in f.tensors} <= set(model.state_dict())
    assert written["q8_0"].bytes < written["f16"].bytes < written["f32"].bytes
    assert set(written["f32"].type_counts()) == {"f32"}
    assert written["q8_0"].type_counts()["f32"] == 2 * model.config.num_hidden_layers + 1  # the norms


def test_metadata_and_tensor_table(written, tiny):
    model, tokenizer = tiny
    meta = gguf_io.read_metadata(written["f16"].path)
    assert meta["general.architecture"] == "llama"
    assert meta["llama.block_count"] == model.config.num_hidden_layers
    assert meta["llama.attention.head_count_kv"] == model.config.num_key_value_heads
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id
    table = gguf_io.tensor_table(written["f16"].path)
    q = next(row for row in table if row["tensor"] == "blk.0.attn_q.weight")
    assert q["type"] == "F16"
    assert q["ggml shape"] == list(reversed(model.model.layers[0].self_attn.q_proj.weight.shape))


@pytest.mark.parametrize("file_type", ["f32", "f16", "q8_0"])
def test_transformers_reads_back_the_same_model(written, tiny, file_type):
    model, tokenizer = tiny
    reader_model, reader_tokenizer = gguf_io.load_with_transformers(written[file_type].path)
    text = "Once upon a time, there was a little dog"
    assert reader_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]
    ids = tokenizer(text, return_tensors="pt").input_ids
    reference, candidate = _logits(model, ids), _logits(reader_model, ids)
    relative = ((candidate - reference).abs().max() / reference.abs().max()).item()
    assert relative <= gguf_io.GGUF_TOLERANCE[file_type]


def test_without_the_permutation_the_read_back_model_is_wrong(tiny, tmp_path):
    model, tokenizer = tiny
    wrong = gguf_io.write_gguf(model, tokenizer, tmp_path / "wrong.gguf", "f32", permute=False)
    reader_model, _ = gguf_io.load_with_transformers(wrong.path)
    ids = tokenizer("Once upon a time, there was a little dog", return_tensors="pt").input_ids
    reference = _logits(model, ids)
    relative = ((_logits(reader_model, ids) - reference).abs().max() / reference.abs().max()).item()
    assert relative > 2 * gguf_io.GGUF_TOLERANCE["q8_0"]


def test_the_writer_refuses_what_it_cannot_write(tiny, tmp_path):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="llama-quantize"):
        gguf_io.write_gguf(model, tokenizer, tmp_path / "x.gguf", "q4_k_m")
    gpt2, gpt2_tokenizer = sources.load_causal_lm("tiny-gpt2", dtype=torch.float32, device="cpu", verbose=False)
    with pytest.raises(ValueError, match="Llama architecture"):
        gguf_io.write_gguf(gpt2, gpt2_tokenizer, tmp_path / "y.gguf", "f16")
