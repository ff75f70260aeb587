"""course_utils.checks.nb00: each check passes a right answer and fails, with a useful message, on wrong ones."""

from __future__ import annotations

import pytest

from course_utils.checks import CheckFailed, nb00


def _stub(*args, **kwargs):
    raise NotImplementedError()


# --- weights_gib -------------------------------------------------------------------------------------------------


def weights_gib_right(n_params, bits):
    return n_params * bits / 8 / 2**30


def test_weights_gib_passes(capsys):
    nb00.weights_gib(weights_gib_right)
    assert capsys.readouterr().out.startswith("\u2713 weights_gib")


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (lambda n, bits: n * bits / 8 / 1e9, "in GB"),
    (lambda n, bits: n * bits / 2**30, "eight times too much"),
    (lambda n, bits: n * bits / 1e9, "eight times too much"),
    (lambda n, bits: n * bits / 8, "number of bytes"),
    (lambda n, bits: n * 2 / 2**30, "expected about"),
    (lambda n, bits: n * bits / 8 / 2**30 * 1.001, "expected about"),
    (lambda n, bits: f"{n * bits / 8 / 2**30:.2f} GiB", "expected a number"),
    (lambda n, bits: print(n * bits / 8 / 2**30), "do not print it"),
])
def test_weights_gib_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb00.weights_gib(wrong)


# --- kv_cache_bytes ----------------------------------------------------------------------------------------------


def kv_right(n_layers, n_kv_heads, head_dim, context, batch=1, bytes_per_value=2):
    return 2 * n_layers * n_kv_heads * head_dim * context * batch * bytes_per_value


def test_kv_cache_bytes_passes(capsys):
    nb00.kv_cache_bytes(kv_right)
    assert "2 GiB" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (lambda n_layers, n_kv_heads, head_dim, context, batch=1, bytes_per_value=2:
        n_layers * n_kv_heads * head_dim * context * batch * bytes_per_value, "key\nAND a value|AND a value"),
    (lambda n_layers, n_kv_heads, head_dim, context, batch=1, bytes_per_value=2:
        2 * n_layers * n_kv_heads * head_dim * context * bytes_per_value, "multiply by batch"),
    (lambda n_layers, n_kv_heads, head_dim, context, batch=1, bytes_per_value=2:
        2 * n_layers * n_kv_heads * head_dim * context * batch, "bytes_per_value"),
    (lambda n_layers, n_kv_heads, head_dim, context, batch=1, bytes_per_value=2:
        kv_right(n_layers, n_kv_heads, head_dim, context, batch, bytes_per_value) / 2**30, "looks like GiB"),
    (lambda n_layers, n_kv_heads, head_dim, context, batch=1, bytes_per_value=2:
        2 * n_layers * 32 * head_dim * context * batch * bytes_per_value, "expected about"),
    (lambda layers, heads, dim, ctx, batch=1, nbytes=2: 0, "unexpected keyword"),
])
def test_kv_cache_bytes_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb00.kv_cache_bytes(wrong)


# --- nf4_bits_per_param ------------------------------------------------------------------------------------------


def nf4_right(block_size=64, double_quant=False, dq_block_size=256):
    if double_quant:
        return 4 + 8 / block_size + 32 / (block_size * dq_block_size)
    return 4 + 32 / block_size


def test_nf4_passes(capsys):
    nb00.nf4_bits_per_param(nf4_right)
    assert "4.127" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (lambda block_size=64, double_quant=False, dq_block_size=256: nf4_right(block_size, double_quant,
                                                                           dq_block_size) / 8, "which is bytes"),
    (lambda block_size=64, double_quant=False, dq_block_size=256: nf4_right(block_size, double_quant,
                                                                           dq_block_size) - 4, "add the 4 bits"),
    (lambda block_size=64, double_quant=False, dq_block_size=256:
        4 + 8 / block_size if double_quant else 4 + 32 / block_size, "second-level fp32 constant"),
    (lambda block_size=64, double_quant=False, dq_block_size=256: 4 + 32 / block_size, "without double quant"),
    (lambda block_size=64, double_quant=False, dq_block_size=256: 4.0, "expected about"),
])
def test_nf4_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb00.nf4_bits_per_param(wrong)


def test_checks_reject_non_functions():
    with pytest.raises(CheckFailed, match="Expected a function"):
        nb00.weights_gib(42)


# --- the debugging exercise: inference_gib ------------------------------------------------------------------------


def inference_gib_buggy(n_params, n_layers, n_kv_heads, head_dim, context, batch=1):
    return (n_params * 4 + n_layers * n_kv_heads * head_dim * context * batch * 2) / 2**30


def inference_gib_fixed(n_params, n_layers, n_kv_heads, head_dim, context, batch=1):
    return (n_params * 2 + 2 * n_layers * n_kv_heads * head_dim * context * batch * 2) / 2**30


def test_inference_gib_passes_the_fixed_version(capsys):
    nb00.inference_gib_debugged(inference_gib_fixed)
    assert capsys.readouterr().out.startswith("\u2713 inference_gib")


@pytest.mark.parametrize("wrong", [
    _stub,
    inference_gib_buggy,
    lambda n, layers, kv, hd, ctx, batch=1: (n * 2 + layers * kv * hd * ctx * batch * 2) / 2**30,
    lambda n, layers, kv, hd, ctx, batch=1: (n * 4 + 2 * layers * kv * hd * ctx * batch * 2) / 2**30,
])
def test_inference_gib_fails_on_the_bug_with_a_symptom(wrong):
    with pytest.raises(CheckFailed) as failure:
        nb00.inference_gib_debugged(wrong)
    assert "factor" not in str(failure.value) and "* 2" not in str(failure.value)
