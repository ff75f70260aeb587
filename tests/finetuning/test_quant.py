"""course_utils.finetuning.quant: NF4 levels from normal quantiles, block-wise absmax, and the comparison with bitsandbytes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from course_utils.finetuning import quant
from course_utils.models import memory


def test_nf4_levels_match_bitsandbytes_and_the_paper_shape():
    levels = quant.nf4_levels()
    assert levels.shape == (16,) and levels.dtype == torch.float32
    assert torch.allclose(levels, quant.bnb_levels("nf4"), atol=1e-6)
    assert levels[0] == -1.0 and levels[-1] == 1.0 and levels[7] == 0.0
    assert (levels[:7] < 0).all() and (levels[8:] > 0).all()  # 7 negative, zero, 8 positive
    assert torch.all(levels[1:] > levels[:-1])
    assert quant.nf4_offset() == pytest.approx(0.9677083, abs=1e-7)


def test_uniform_levels():
    levels = quant.uniform_levels()
    assert torch.allclose(levels[1:] - levels[:-1], torch.full((15,), 2 / 15))


def test_blockwise_absmax_and_codes():
    x = torch.tensor([[0.5, -2.0, 0.0, 1.0], [3.0, 0.1, -0.3, 0.2]])
    q = quant.quantize_blockwise(x, quant.nf4_levels(), block_size=4)
    assert q.absmax.tolist() == [2.0, 3.0]
    assert q.codes.dtype == torch.uint8 and q.codes.shape == (8,)
    assert q.codes[1] == 0 and q.codes[2] == 7 and q.codes[4] == 15  # -absmax, exact zero, +absmax
    restored = quant.dequantize_blockwise(q)
    assert restored.shape == x.shape
    assert restored[0, 1] == -2.0 and restored[0, 2] == 0.0 and restored[1, 0] == 3.0


def test_padding_of_a_last_partial_block():
    x = torch.randn(70)
    q = quant.quantize_blockwise(x, block_size=64)
    assert q.absmax.shape == (2,) and q.codes.shape == (70,)
    assert quant.dequantize_blockwise(q).shape == (70,)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.sampled_from([16, 32, 64]), st.floats(1e-3, 1e3))
def test_roundtrip_error_bounded_by_half_the_widest_gap(blocks, block_size, scale):
    x = torch.randn(blocks * block_size, generator=torch.Generator().manual_seed(blocks)) * scale
    levels = quant.nf4_levels()
    q = quant.quantize_blockwise(x, levels, block_size)
    error = (quant.dequantize_blockwise(q) - x).abs().view(-1, block_size)
    widest = (levels[1:] - levels[:-1]).max()
    assert torch.all(error <= q.absmax[:, None] * widest / 2 + 1e-6 * scale)


def test_nf4_beats_uniform_int4_on_normal_weights():
    x = torch.randn(64, 1024, generator=torch.Generator().manual_seed(0))
    rows = {row["format"]: row["mean squared error"] for row in quant.roundtrip_errors(x)}
    assert rows["NF4"] < rows["uniform int4"] < rows["FP4 (bitsandbytes)"]
    usage_nf4 = quant.code_usage(x, quant.nf4_levels())
    usage_int4 = quant.code_usage(x, quant.uniform_levels())
    assert usage_nf4.sum() == pytest.approx(1.0) and usage_nf4.max() < usage_int4.max()


def test_ours_equals_bitsandbytes_roundtrip():
    x = torch.randn(32, 256, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(quant.roundtrip(x), quant.bnb_roundtrip(x), atol=1e-5)
    double = quant.bnb_roundtrip(x, double_quant=True)
    assert (double - x).pow(2).mean() < 0.02


def test_storage_bits_counted_from_bitsandbytes_tensors_match_the_formula():
    x = torch.randn(64 * 256 * 4)
    plain = quant.bnb_storage_bits(x)
    assert plain["codes"] == 4.0 and plain["absmax"] == 0.5 and plain["second level"] == 0.0
    assert plain["total"] == memory.nf4_bits_per_param(64) == plain["formula"]
    double = quant.bnb_storage_bits(x, double_quant=True)
    assert double["absmax"] == 0.125
    # the formula plus bitsandbytes' one fp32 offset per tensor
    assert double["total"] == pytest.approx(memory.nf4_bits_per_param(64, double_quant=True) + 32 / x.numel())


def test_bnb_path_names_the_backend():
    assert "CPU backend" in quant.bnb_path("cpu")


def test_training_after_an_eval_forward_reaches_every_adapter(bnb_cpu_kernel):
    """bitsandbytes' packed CPU kernel, once an eval forward has repacked the weights, has no backward: without
    restore_training_layout, the adapters of the first layers get no gradient."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    from course_utils.ground import sources

    def adapter_grads(restore):
        model = AutoModelForCausalLM.from_pretrained(sources.resolve_model("tiny-llama").location,
                                                     quantization_config=quant.nf4_config(torch.float32))
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        torch.manual_seed(0)
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "up_proj"],
                                                 task_type="CAUSAL_LM"))
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0, 0.05)
        ids = torch.arange(20).reshape(2, 10) + 5
        model.eval()
        with torch.no_grad():
            model(ids)  # a baseline evaluation
        changed = quant.restore_training_layout(model) if restore else 0
        model.train()
        model(ids, labels=ids).loss.backward()
        trainable = [p for p in model.parameters() if p.requires_grad]
        return changed, sum(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in trainable), len(trainable)

    changed, with_grad, total = adapter_grads(restore=True)
    assert with_grad == total
    if bnb_cpu_kernel == "packed":
        assert changed > 0
        assert adapter_grads(restore=False)[1] < total  # the defect the function works around
    else:
        assert changed == 0


def _one_packed_layer():
    """A model of one bitsandbytes Linear4bit whose quant state says it was repacked for the CPU kernel."""
    from types import SimpleNamespace

    from bitsandbytes.nn import Linear4bit

    layer = Linear4bit(64, 64, bias=False, compute_dtype=torch.float32)
    layer.weight.quant_state = SimpleNamespace(packing_format_for_cpu=True)
    return torch.nn.Sequential(layer), layer


def test_restore_training_layout_uses_the_inverse_where_bitsandbytes_has_it(monkeypatch):
    from types import SimpleNamespace

    import bitsandbytes.functional

    model, layer = _one_packed_layer()
    restored = SimpleNamespace(packing_format_for_cpu=False)
    calls = []

    def inverse(data, state):
        calls.append(state.packing_format_for_cpu)
        return data, restored

    monkeypatch.setattr(bitsandbytes.functional, "_convert_weight_packed_for_cpu_inverse", inverse, raising=False)
    assert quant.restore_training_layout(model) == 1 and calls == [True]
    assert layer.weight.quant_state is restored
    assert quant.restore_training_layout(model) == 0  # already in the training layout: nothing to do


def test_restore_training_layout_where_bitsandbytes_has_no_inverse(monkeypatch):
    import bitsandbytes.functional

    monkeypatch.delattr(bitsandbytes.functional, "_convert_weight_packed_for_cpu_inverse", raising=False)
    from bitsandbytes.nn import Linear4bit

    unpacked = torch.nn.Sequential(Linear4bit(64, 64, bias=False))
    assert quant.restore_training_layout(unpacked) == 0  # an older release never repacks: nothing is needed
    model, _ = _one_packed_layer()
    with pytest.raises(RuntimeError, match=r"1 4-bit layers were repacked .* install bitsandbytes 0\.50 or newer"):
        quant.restore_training_layout(model)
