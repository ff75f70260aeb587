"""course_utils.storage.compression: byte grouping, entropy, the rANS coder and lossless checkpoint compression."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load, load_file, save

from course_utils.ground import paths
from course_utils.storage import compression


def _weights(n: int, seed: int = 0, scale: float = 0.02) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)) * scale


# --- bits, byte grouping, entropy ------------------------------------------------------------------------------


def test_split_and_join_are_inverse_on_every_16_bit_pattern():
    every = np.arange(2**16, dtype=np.uint16)
    high, low = compression.split_streams(every)
    assert high.dtype == low.dtype == np.uint8
    assert np.array_equal(compression.join_streams(high, low), every)


def test_for_bf16_the_high_byte_is_exactly_the_exponent():
    tensor = torch.cat([_weights(1000), -_weights(1000, seed=1), torch.tensor([0.0, -0.0, 1.0, -3.5])]).bfloat16()
    bits = compression.float16_bits(tensor)
    high, low = compression.split_streams(bits)
    assert np.array_equal(high, compression.bf16_exponents(bits))
    assert np.array_equal(low & 1, bits >> 15)  # the sign went to the bottom of the low byte
    assert np.array_equal(low >> 1, bits & 0x7F)  # above it, the 7 mantissa bits


def test_float16_bits_refuses_other_dtypes():
    with pytest.raises(TypeError, match="bfloat16 or float16"):
        compression.float16_bits(torch.zeros(3))


def test_entropy_of_known_distributions():
    assert compression.entropy_bits(np.zeros(100, np.uint8)) == 0.0
    assert compression.entropy_bits(np.array([0, 1, 2, 3] * 25, np.uint8)) == pytest.approx(2.0)
    assert compression.entropy_bits(np.array([], np.uint8)) == 0.0
    skewed = np.array([0] * 3 + [1], np.uint8)
    assert compression.entropy_bits(skewed) == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))


def test_a_per_segment_bound_is_never_above_the_whole_stream_bound():
    stream = np.concatenate([np.zeros(500, np.uint8), np.full(500, 7, np.uint8)])
    assert compression.entropy_bound_bytes(stream) == pytest.approx(1000 / 8)
    assert compression.entropy_bound_bytes(stream, [500, 500]) == 0.0
    with pytest.raises(ValueError, match="add up"):
        compression.entropy_bound_bytes(stream, [500, 400])


@pytest.mark.parametrize("counts", [[5, 0, 1, 1000], [1] * 256, [0, 7], [10**9, 1, 1]])
def test_quantized_frequencies_sum_to_the_scale_and_keep_every_symbol(counts):
    freqs = compression.quantize_frequencies(np.array(counts, dtype=np.int64))
    assert int(freqs.sum()) == 2**compression.RANS_SCALE_BITS
    assert all((f > 0) == (c > 0) for f, c in zip(freqs, counts))


# --- rANS ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("symbols", [
    np.array([], np.uint8),
    np.array([42], np.uint8),
    np.full(10_000, 9, np.uint8),
    np.arange(256, dtype=np.uint8),
    np.random.default_rng(0).integers(0, 256, 50_000).astype(np.uint8),
    np.random.default_rng(1).geometric(0.3, 30_000).clip(0, 255).astype(np.uint8),
])
def test_rans_round_trip(symbols):
    blob = compression.rans_compress(symbols)
    assert np.array_equal(compression.rans_decompress(blob), symbols)


def test_rans_round_trip_with_segments_of_every_size():
    rng = np.random.default_rng(2)
    lengths = [0, 1, 5000, 0, 9000, 3, 4096, 4097]
    symbols = np.concatenate([rng.integers(0, 1 + 50 * i, n).astype(np.uint8) for i, n in enumerate(lengths)])
    stream = compression.rans_encode(symbols, lengths, steps_per_lane=1000)
    decoded = compression.rans_decode(compression.RansStream.from_bytes(stream.to_bytes()))
    assert np.array_equal(decoded, symbols)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 255), max_size=400), st.integers(1, 64), st.lists(st.integers(0, 400), max_size=5))
def test_rans_round_trip_on_anything(values, steps, cuts):
    symbols = np.array(values, np.uint8)
    bounds = sorted(min(c, symbols.size) for c in cuts)
    lengths = np.diff([0, *bounds, symbols.size]).tolist()
    stream = compression.rans_encode(symbols, lengths, steps_per_lane=steps)
    assert np.array_equal(compression.rans_decode(stream), symbols)


def test_rans_is_within_a_percent_of_the_bound_on_weight_exponents():
    tensors = [_weights(60_000, seed=i, scale=0.01 * (i + 1)).bfloat16() for i in range(4)]
    exponents = np.concatenate([compression.split_streams(compression.float16_bits(t))[0] for t in tensors])
    lengths = [t.numel() for t in tensors]
    coded = len(compression.rans_compress(exponents, lengths))
    bound = compression.entropy_bound_bytes(exponents, lengths)
    assert bound <= coded <= 1.01 * bound
    assert coded < len(compression.zstd_compress(exponents.tobytes()))


def test_a_damaged_rans_stream_is_detected():
    symbols = np.random.default_rng(3).integers(0, 16, 20_000).astype(np.uint8)
    stream = compression.rans_encode(symbols)
    broken = compression.RansStream(stream.segment_lengths, stream.scale_bits, stream.steps_per_lane, stream.freqs,
                                    stream.states ^ np.uint64(1 << 40), stream.words)
    with pytest.raises(ValueError, match="corrupt rANS stream"):
        compression.rans_decode(broken)
    short = compression.RansStream(stream.segment_lengths, stream.scale_bits, stream.steps_per_lane, stream.freqs,
                                   stream.states, stream.words[:-10])
    with pytest.raises(ValueError, match="corrupt rANS stream"):
        compression.rans_decode(short)


# --- whole checkpoints -----------------------------------------------------------------------------------------


def _mixed_checkpoint() -> bytes:
    return save({
        "a.bf16": _weights(3000).bfloat16().reshape(30, 100),
        "b.f32": _weights(500, seed=4),
        "c.f16": _weights(2000, seed=5).half(),
        "d.i64": torch.arange(7),
        "e.norm": torch.ones(64, dtype=torch.bfloat16),
    }, metadata={"format": "pt"})


@pytest.mark.parametrize("coder", compression.CODERS)
def test_checkpoint_round_trip_is_bit_identical(coder):
    data = _mixed_checkpoint()
    packed = compression.compress_checkpoint(data, coder, zstd_level=3)
    assert len(packed) < len(data)
    assert compression.decompress_checkpoint(packed) == data
    restored, original = load(compression.decompress_checkpoint(packed)), load(data)
    assert all(torch.equal(restored[k].reshape(-1).view(torch.uint8), v.reshape(-1).view(torch.uint8))
               for k, v in original.items())


def test_a_checkpoint_without_16_bit_tensors_still_round_trips():
    data = save({"w": _weights(100), "i": torch.arange(3)})
    assert compression.decompress_checkpoint(compression.compress_checkpoint(data, zstd_level=3)) == data


def test_decompress_refuses_foreign_bytes():
    with pytest.raises(ValueError, match="magic"):
        compression.decompress_checkpoint(b"not a checkpoint")
    with pytest.raises(ValueError, match="coder"):
        compression.compress_checkpoint(_mixed_checkpoint(), "gzip")


def test_on_the_tiny_model_grouped_rans_is_near_the_bound_and_beats_zstd():
    fp32 = load_file(paths.data_dir() / "models" / "tiny-llama" / "model.safetensors")
    data = save({k: v.bfloat16() for k, v in fp32.items()}, metadata={"format": "pt"})
    result = compression.measure_checkpoint("bf16", data, zstd_level=3, use_lzma=False)
    assert result.lossless
    assert 0 <= result.rans_over_bound < 0.02
    assert result.grouped_rans < result.grouped_zstd < result.zstd
    row = result.row()
    assert row["lzma"] == "-" and row["bit-identical"] == "yes"
    assert {r["stream"] for r in compression.stream_rows([result])} == set(compression.STREAM_NAMES)


def test_fingerprints_of_where_fp16_weights_came_from():
    fp32 = {"w": _weights(20_000)}
    bf16 = {"w": fp32["w"].bfloat16()}
    assert compression.exact_bf16_fraction(fp32) < 0.01
    assert compression.exact_bf16_fraction({"w": bf16["w"].float()}) == 1.0
    assert compression.low_mantissa_zero_fraction({"w": fp32["w"].half()}) == pytest.approx(1 / 8, abs=0.02)
    assert compression.low_mantissa_zero_fraction({"w": bf16["w"].half()}) > 0.99


def test_sample_tensors_keeps_name_order_within_the_budget():
    tensors = {name: torch.zeros(250_000) for name in ("c", "a", "b")}  # 1 MB each in fp32
    assert list(compression.sample_tensors(tensors, None)) == ["c", "a", "b"]
    assert list(compression.sample_tensors(tensors, 2.5)) == ["a", "b"]
    tiny = compression.sample_tensors(tensors, 0.1)  # not even one fits: the first 0.1 MB of the first
    assert list(tiny) == ["a"] and tiny["a"].numel() == 25_000


def test_sample_tensors_skips_a_tensor_bigger_than_the_budget():
    tensors = {"a_embedding": torch.zeros(3_000_000), "b": torch.zeros(250_000), "c": torch.zeros(250_000)}
    sample = compression.sample_tensors(tensors, 2)  # the 12 MB embedding alone would be six times the budget
    assert list(sample) == ["b", "c"]
    assert sum(t.numel() for t in sample.values()) * 4 <= 2e6


def test_the_histogram_plot_draws_both_streams(monkeypatch):
    import matplotlib.pyplot as plt

    monkeypatch.setattr(plt, "show", lambda: None)
    figure = compression.plot_byte_histograms({"bf16": {"w": _weights(1000).bfloat16()}})
    assert len(figure.axes) == 2
    plt.close(figure)
