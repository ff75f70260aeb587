"""The from-scratch GPT: shapes, causality, both attention paths, and the round trip to Hugging Face's GPT-2."""

from __future__ import annotations

import json

import pytest
import torch

from course_utils.ground import paths
from course_utils.models.gpt import (
    GPT,
    GPTConfig,
    explicit_attention,
    from_hf_gpt2,
    padded_vocab_size,
    save_hf,
)

SMALL = GPTConfig(vocab_size=50, context_length=16, n_embd=32, n_layer=2, n_head=4)


def _model(**changes) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**SMALL.__dict__, **changes})).eval()


def test_logits_shape_and_tied_head():
    model = _model()
    ids = torch.randint(0, 50, (3, 10))
    assert model(ids).shape == (3, 10, 50)
    assert model.lm_head.weight is model.wte.weight
    assert _model(tie_embeddings=False).lm_head.weight is not _model(tie_embeddings=False).wte.weight


def test_parameter_count_matches_transformers_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    ours = GPT(GPTConfig())  # the workbook's tiny GPT: same sizes as data/models/tiny-gpt2
    theirs = GPT2LMHeadModel(GPT2Config(vocab_size=832, n_positions=256, n_embd=128, n_layer=4, n_head=4))
    shipped = json.loads((paths.data_dir() / "MANIFEST.json").read_text())["models"]["tiny-gpt2"]["parameters"]
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters()) == shipped
    assert ours.num_parameters(count_positions=False) == shipped - 256 * 128


def test_the_future_does_not_leak_into_the_past():
    model = _model()
    ids = torch.randint(0, 50, (1, 12))
    changed = ids.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 50
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[:, :8], model(changed)[:, :8])
        assert not torch.allclose(model(ids)[:, 8:], model(changed)[:, 8:])


def test_explicit_attention_equals_sdpa():
    sdpa, explicit = _model(), _model(attention="explicit")
    explicit.load_state_dict(sdpa.state_dict())
    ids = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(sdpa(ids), explicit(ids), rtol=1e-4, atol=1e-5)
    q, k, v = (torch.randn(2, 3, 5, 4) for _ in range(3))
    mask = torch.tril(torch.ones(5, 5, dtype=torch.bool))
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(explicit_attention(q, k, v, mask), expected, rtol=1e-4, atol=1e-5)


def test_gradients_reach_every_parameter():
    model = _model().train()
    ids = torch.randint(0, 50, (2, 16))
    model(ids).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("tied", [True, False])
def test_export_loads_with_auto_classes_and_gives_the_same_logits(tmp_path, tied):
    from transformers import AutoModelForCausalLM

    model = _model(tie_embeddings=tied)
    save_hf(model, tmp_path)
    assert {"config.json", "model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded).__name__ == "GPT2LMHeadModel"
    ids = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids), rtol=1e-4, atol=1e-5)
    back = from_hf_gpt2(loaded)
    with torch.no_grad():
        torch.testing.assert_close(back(ids), model(ids))


def test_loads_the_embedded_tiny_gpt2():
    from course_utils.ground.sources import load_causal_lm

    hf, _ = load_causal_lm("tiny-gpt2", verbose=False)
    ours = from_hf_gpt2(hf)
    ids = torch.randint(0, 832, (1, 20))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, rtol=1e-4, atol=1e-4)


def test_padded_vocabulary():
    assert padded_vocab_size(50257) == 50304 and padded_vocab_size(864) == 896 and padded_vocab_size(896) == 896


def test_errors_say_what_to_do():
    with pytest.raises(ValueError, match="divisible by n_head"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="attention must be"):
        GPTConfig(attention="flash")
    with pytest.raises(ValueError, match="longer than the context length"):
        _model()(torch.zeros(1, 17, dtype=torch.long))


def test_benchmark_script_compares_the_same_function(tmp_path):
    import json
    import runpy

    from course_utils.ground import paths

    bench = runpy.run_path(str(paths.REPO_ROOT / "scripts" / "bench_gpt_vs_hf.py"), run_name="bench")
    out = tmp_path / "bench.json"
    assert bench["main"](["--vocab", "50", "--n-embd", "16", "--n-layer", "1", "--n-head", "2", "--seq-len", "8",
                          "--batch", "2", "--rounds", "1", "--steps", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["max_logit_difference"] < 1e-4 and report["ratio"] > 0
    assert set(report["tokens_per_second"]) == {"from-scratch GPT", "transformers GPT2LMHeadModel"}


def test_a_given_attention_function_is_what_every_block_attends_with():
    calls = []

    def mine(q, k, v):  # the textbook formula, as a student writes it
        calls.append(tuple(q.shape))
        time = q.size(-2)
        return explicit_attention(q, k, v, torch.ones(time, time, dtype=torch.bool).tril())

    reference = _model()
    torch.manual_seed(0)
    assembled = GPT(SMALL, attention=mine).eval()
    assert assembled.state_dict().keys() == reference.state_dict().keys()
    idx = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        assert torch.allclose(assembled(idx), reference(idx), atol=1e-5)
    assert calls == [(2, 4, 7, 8)] * SMALL.n_layer

    def peeks(q, k, v):  # no mask: the future leaks, and the model shows it
        return torch.softmax(q @ k.transpose(-2, -1) / q.size(-1) ** 0.5, -1) @ v

    leaky = GPT(SMALL, attention=peeks).eval()
    leaky.load_state_dict(reference.state_dict())
    changed = idx.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 50
    with torch.no_grad():
        assert not torch.allclose(leaky(idx)[:, 0], leaky(changed)[:, 0])
