"""course_utils.models.arch: every from-scratch piece against its transformers counterpart, RoPE scaling, GQA, the cache."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama import modeling_llama as hf

from course_utils.ground import paths
from course_utils.models import arch

TOL = arch.TOLERANCE


def _close(a, b, tol=TOL):
    return torch.allclose(a.double(), b.double(), **tol)


# --- each component against transformers -------------------------------------------------------------------------


def test_every_component_matches_transformers():
    results = arch.compare_with_transformers(seed=1)
    assert [r.component for r in results] == ["RMSNorm", "SwiGLUFeedForward", "rope (default)",
                                              "rope_frequencies (llama3)", "GroupedQueryAttention", "LlamaBlock",
                                              "LlamaFromScratch (logits)"]
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    assert all(r.as_row()["within"] == "yes" for r in results)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_matches_llama_rms_norm_in_float32_and_bfloat16(dtype):
    torch.manual_seed(0)
    reference = hf.LlamaRMSNorm(48, eps=1e-5).to(dtype)
    torch.nn.init.normal_(reference.weight, 1.0, 0.3)
    x = (torch.randn(3, 7, 48) * 4 + 1).to(dtype)
    ours = arch.RMSNorm(48, eps=1e-5).to(dtype)
    ours.load_state_dict(reference.state_dict())
    # Both compute in float32 and convert back before the gain: the same numbers, even in bfloat16.
    assert torch.equal(ours(x), reference(x))


def test_rms_norm_is_scale_invariant_and_has_unit_rms():
    x = torch.randn(4, 32)
    y = arch.rms_norm(x, torch.ones(32), eps=0.0)
    assert torch.allclose(y.pow(2).mean(-1), torch.ones(4), atol=1e-5)
    assert torch.allclose(arch.rms_norm(10 * x, torch.ones(32), eps=0.0), y, atol=1e-5)


def test_swiglu_function_and_module_match_llama_mlp():
    torch.manual_seed(0)
    mlp = hf.LlamaMLP(arch.tiny_llama_config(hidden_size=32, intermediate_size=88))
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        expected = mlp(x)
        ours = arch.SwiGLUFeedForward(32, 88)
        ours.load_state_dict(mlp.state_dict())
        assert _close(ours(x), expected)
        assert _close(arch.swiglu(x, mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight), expected)
    assert torch.allclose(arch.silu(x), torch.nn.functional.silu(x))


@pytest.mark.parametrize("theta", [10_000.0, 500_000.0])
def test_rope_matches_transformers_at_offset_positions(theta):
    torch.manual_seed(0)
    config = arch.tiny_llama_config(hidden_size=64, n_heads=2, n_kv_heads=2,
                                    rope_parameters={"rope_type": "default", "rope_theta": theta})
    x = torch.randn(2, 2, 6, 32)
    positions = torch.arange(40, 46)
    cos, sin = hf.LlamaRotaryEmbedding(config)(x, positions[None].expand(2, -1))
    expected, _ = hf.apply_rotary_pos_emb(x, x, cos, sin)
    assert _close(arch.rope(x, positions, theta), expected)
    ours_cos, ours_sin = arch.rope_cos_sin(arch.rope_inverse_frequencies(32, theta), positions)
    assert _close(arch.apply_rope(x, ours_cos[None].expand(2, -1, -1), ours_sin[None].expand(2, -1, -1)), expected)


def test_rope_scores_depend_only_on_the_distance_and_keep_the_norm():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 32), torch.randn(1, 1, 1, 32)

    def score(m, n):
        return (arch.rope(q, torch.tensor([m])) * arch.rope(k, torch.tensor([n]))).sum()

    assert torch.isclose(score(7, 3), score(1007, 1003), atol=1e-3)
    assert not torch.isclose(score(7, 3), score(7, 6), atol=1e-3)
    assert torch.isclose(arch.rope(q, torch.tensor([123])).norm(), q.norm(), atol=1e-4)


# --- RoPE scaling -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rope", [
    arch.LLAMA31_ROPE,
    dict(arch.LLAMA31_ROPE, factor=32.0),
    {"rope_type": "llama3", "rope_theta": 10_000.0, "factor": 4.0, "low_freq_factor": 2.0, "high_freq_factor": 8.0,
     "original_max_position_embeddings": 256},
])
@pytest.mark.parametrize("head_dim", [32, 64, 128])
def test_llama3_frequencies_match_transformers(rope, head_dim):
    config = arch.tiny_llama_config(hidden_size=2 * head_dim, n_heads=2, n_kv_heads=2, head_dim=head_dim,
                                    rope_parameters=rope)
    expected, _ = ROPE_INIT_FUNCTIONS["llama3"](config)
    assert torch.allclose(arch.rope_frequencies(head_dim, rope), expected, rtol=1e-6, atol=0)


def test_llama3_scaling_keeps_fast_pairs_divides_slow_ones_and_blends_between():
    base = arch.rope_inverse_frequencies(128, 500_000.0)
    scaled = arch.rope_frequencies(128, arch.LLAMA31_ROPE)
    wavelength = 2 * math.pi / base
    fast, slow = wavelength < 8192 / 4, wavelength > 8192 / 1
    assert fast.any() and slow.any() and (~fast & ~slow).any()
    assert torch.equal(scaled[fast], base[fast])
    assert torch.allclose(scaled[slow], base[slow] / 8)
    middle = ~fast & ~slow
    assert ((scaled[middle] < base[middle]) & (scaled[middle] > base[middle] / 8)).all()
    assert (scaled[1:] <= scaled[:-1]).all()  # still ordered from fast to slow


def test_rope_frequency_errors():
    with pytest.raises(ValueError, match="must be even"):
        arch.rope_inverse_frequencies(31)
    with pytest.raises(ValueError, match="'yarn' is not written out"):
        arch.rope_frequencies(64, {"rope_type": "yarn", "rope_theta": 10_000.0})
    with pytest.raises(ValueError, match="must be larger than low_freq_factor"):
        arch.llama3_scale_frequencies(arch.rope_inverse_frequencies(8), 8.0, 4.0, 4.0, 8192)


def test_rope_parameters_of_reads_transformers_4_and_5_layouts():
    v5 = {"rope_parameters": dict(arch.LLAMA31_ROPE)}
    v4 = {"rope_theta": 500_000.0, "rope_scaling": {k: v for k, v in arch.LLAMA31_ROPE.items() if k != "rope_theta"}}
    assert arch.rope_parameters_of(v5) == arch.LLAMA31_ROPE
    assert arch.rope_parameters_of(v4) == arch.LLAMA31_ROPE
    assert arch.rope_parameters_of({}) == {"rope_type": "default", "rope_theta": 10_000.0}


# --- grouped-query attention --------------------------------------------------------------------------------------


def test_gqa_equals_mha_when_kv_heads_equal_heads():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 7, 8) for _ in range(3))
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert _close(arch.grouped_query_attention(q, k, v), expected)
    assert arch.repeat_kv(k, 1) is k


def test_gqa_module_equals_mha_module_with_each_kv_head_copied_for_its_group():
    torch.manual_seed(0)
    gqa = arch.GroupedQueryAttention(64, n_heads=8, n_kv_heads=2)
    mha = arch.GroupedQueryAttention(64, n_heads=8, n_kv_heads=8)
    with torch.no_grad():
        mha.q_proj.weight.copy_(gqa.q_proj.weight)
        mha.o_proj.weight.copy_(gqa.o_proj.weight)
        for name in ("k_proj", "v_proj"):  # (kv_heads * d, hidden) -> (heads * d, hidden), group by group
            weight = getattr(gqa, name).weight.view(2, 8, 64).repeat_interleave(4, dim=0).reshape(64, 64)
            getattr(mha, name).weight.copy_(weight)
        x = torch.randn(2, 5, 64)
        cos, sin = arch.rope_cos_sin(arch.rope_inverse_frequencies(8), torch.arange(5))
        assert _close(gqa(x, cos, sin), mha(x, cos, sin))
    assert sum(p.numel() for p in gqa.parameters()) < sum(p.numel() for p in mha.parameters())


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_gqa_module_matches_llama_attention(kv_heads):
    torch.manual_seed(kv_heads)
    config = arch.tiny_llama_config(hidden_size=64, n_heads=4, n_kv_heads=kv_heads)
    reference = hf.LlamaAttention(config, layer_idx=0).eval()
    ours = arch.GroupedQueryAttention(64, 4, kv_heads)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(1, 6, 64)
    cos, sin = hf.LlamaRotaryEmbedding(config)(x, torch.arange(6)[None])
    with torch.no_grad():
        expected, _ = reference(x, position_embeddings=(cos, sin), attention_mask=None)
        assert _close(ours(x, cos[0], sin[0]), expected)


def test_fewer_queries_than_keys_are_the_last_positions():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 9, 8), torch.randn(1, 2, 9, 8), torch.randn(1, 2, 9, 8)
    full = arch.grouped_query_attention(q, k, v)
    assert _close(arch.grouped_query_attention(q[:, :, -2:], k, v), full[:, :, -2:])


@pytest.mark.parametrize(("args", "message"), [
    ((100, 3, 3), "hidden_size=100 is not divisible by num_attention_heads=3"),
    ((128, 4, 3), r"Choose num_key_value_heads among \[1, 2, 4\]"),
    ((64, 8, 0), "num_key_value_heads must be a positive integer"),
    ((96, 4, 4, 3), "head_dim=3 is odd"),
])
def test_head_count_errors_say_what_to_do(args, message):
    with pytest.raises(arch.HeadCountError, match=message):
        arch.check_head_counts(*args)
    assert issubclass(arch.HeadCountError, ValueError)


def test_head_counts_with_explicit_head_dim_as_gemma():
    assert arch.check_head_counts(2048, 8, 1, 256) == 256
    assert arch.check_head_counts(128, 4, 2) == 32
    with pytest.raises(arch.HeadCountError):
        arch.GroupedQueryAttention(128, 4, 3)


# --- the whole model and the cache --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama():
    return AutoModelForCausalLM.from_pretrained(paths.data_dir() / "models" / "tiny-llama").eval()


def test_from_folder_and_from_transformers_reproduce_the_checkpoint(tiny_llama):
    ids = torch.tensor([[0, 17, 250, 31, 99, 5, 400]])
    with torch.no_grad():
        expected = tiny_llama(ids).logits
        for ours in (arch.LlamaFromScratch.from_folder(paths.data_dir() / "models" / "tiny-llama"),
                     arch.LlamaFromScratch.from_transformers(tiny_llama)):
            assert _close(ours(ids), expected, arch.MODEL_TOLERANCE)
    assert set(ours.state_dict()) == set(tiny_llama.state_dict())


def test_cache_gives_the_same_logits_step_by_step(tiny_llama):
    ours = arch.LlamaFromScratch.from_transformers(tiny_llama)
    ids = torch.tensor([[0, 17, 250, 31, 99, 5, 400, 12]])
    cache = arch.KVCache()
    with torch.no_grad():
        full = ours(ids)
        steps = [ours(ids[:, :5], cache)] + [ours(ids[:, t:t + 1], cache) for t in range(5, 8)]
    assert _close(torch.cat(steps, dim=1), full)
    assert cache.seq_length() == 8
    assert cache.nbytes() == 2 * 4 * 2 * 8 * 32 * 4  # keys and values x layers x kv heads x tokens x dim x fp32


def test_generation_with_and_without_cache_matches_transformers(tiny_llama):
    ours = arch.LlamaFromScratch.from_transformers(tiny_llama)
    ids = torch.tensor([[0, 17, 250, 31]])
    cached, plain = ours.generate(ids, 12), ours.generate(ids, 12, use_cache=False)
    # eos_token_id=None: transformers keeps going past end-of-text (here the first greedy token), as ours does.
    reference = tiny_llama.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                                    eos_token_id=None, pad_token_id=1)
    assert torch.equal(cached, plain)
    assert torch.equal(cached, reference)


def test_tied_model_shares_the_embedding():
    config = arch.tiny_llama_config()
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    reference = LlamaForCausalLM(config).eval()
    ours = arch.LlamaFromScratch.from_transformers(reference)
    assert ours.lm_head.weight.data_ptr() == ours.model.embed_tokens.weight.data_ptr()
    ids = torch.randint(3, 128, (1, 6))
    with torch.no_grad():
        assert _close(ours(ids), reference(ids).logits, arch.MODEL_TOLERANCE)


def test_kv_cache_rejects_layers_out_of_order():
    cache = arch.KVCache()
    with pytest.raises(IndexError, match="in order"):
        cache.update(1, torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2))
    assert cache.seq_length() == 0


def test_from_folder_refuses_another_architecture():
    with pytest.raises(ValueError, match="'gpt2' model"):
        arch.LlamaFromScratch.from_folder(paths.data_dir() / "models" / "tiny-gpt2")


def test_bfloat16_model_keeps_float32_rotation_speeds():
    torch.manual_seed(0)
    reference = LlamaForCausalLM(arch.tiny_llama_config()).eval().to(torch.bfloat16)
    ours = arch.LlamaFromScratch.from_transformers(reference)
    assert next(ours.parameters()).dtype == torch.bfloat16
    assert ours.model.inv_freq.dtype == torch.float32
    ids = torch.randint(3, 128, (1, 10))
    with torch.no_grad():
        assert torch.allclose(ours(ids).float(), reference(ids).logits.float(), atol=0.05)
