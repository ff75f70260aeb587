"""Checks for Notebook 00 (your machine and what fits on it): weights in GiB, KV cache bytes, NF4 bits, and the
experiment that measures the KV cache."""

from __future__ import annotations

import math
from collections.abc import Callable

from course_utils.checks import (
    CheckFailed,
    call,
    check,
    expect,
    expect_close,
    experiments,
    passed,
    passed_experiment,
    run_experiment,
)
from course_utils.models import memory

GIB = memory.GIB


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise CheckFailed(f"{what}: expected a number, got {type(value).__name__} {value!r}. Return the value, "
                          "do not print it.")
    result = float(value)  # type: ignore[arg-type]
    expect(math.isfinite(result), f"{what}: expected a finite number, got {result!r}.")
    return result


def _near(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6)


@check(forbids=(
    "course_utils.models.memory.weights_gib", "course_utils.models.memory.weights_bytes",
    "course_utils.models.memory.bytes_per_param"
))
def weights_gib(student: Callable[[float, float], float]) -> None:
    """``weights_gib(n_params, bits)``: memory of the weights in GiB."""
    cases = [(6_738_415_616, 16, "Llama-2-7B in 16-bit"), (124_439_808, 32, "GPT-2 in fp32"),
             (8_030_261_248, 4.5, "Llama-3-8B in NF4 (4.5 bits)"), (1_000_000_000, 8, "one billion int8 weights")]
    for n_params, bits, label in cases:
        got = _number(call(student, n_params, bits, what="weights_gib"), f"weights_gib({n_params:,}, {bits})")
        expected = memory.weights_gib(n_params, bits)
        what = f"weights_gib({n_params:,}, {bits}) for {label}"
        if _near(got, expected * 2**30 / 1e9):
            raise CheckFailed(f"{what}: got {got:.4g}, which is in GB (10**9 bytes). A GiB is 2**30 = "
                              f"1,073,741,824 bytes: divide the bytes by 2**30 to get {expected:.4g}.")
        if _near(got, expected * 8) or _near(got, expected * 8 * 2**30 / 1e9):
            raise CheckFailed(f"{what}: got {got:.4g}, eight times too much: `bits` are bits per weight, and a "
                              "byte has 8 bits. Bytes = n_params * bits / 8.")
        if _near(got, expected * 2**30):
            raise CheckFailed(f"{what}: got {got:.4g}, which is the number of bytes; return GiB (divide by 2**30).")
        expect_close(got, expected, what, rel=1e-6,
                     hint="Bytes are n_params * bits / 8; GiB are bytes / 2**30.")
    passed("weights_gib: bytes = parameters x bits / 8, and a GiB is 2**30 bytes.")


@check(forbids=("course_utils.models.memory.kv_cache_bytes",))
def kv_cache_bytes(student: Callable[..., float]) -> None:
    """``kv_cache_bytes(n_layers, n_kv_heads, head_dim, context, batch, bytes_per_value)``: KV cache size."""
    # Ordered so that each usual mistake shows first where it cannot be mistaken for another one.
    cases = [
        (dict(n_layers=12, n_kv_heads=12, head_dim=64, context=1024, batch=1, bytes_per_value=4),
         "GPT-2, 1024 tokens, fp32"),
        (dict(n_layers=18, n_kv_heads=1, head_dim=256, context=1000, batch=3, bytes_per_value=2),
         "Gemma-2B, 1000 tokens, batch 3"),
        (dict(n_layers=32, n_kv_heads=32, head_dim=128, context=4096, batch=1, bytes_per_value=2),
         "Llama-2-7B, 4096 tokens, fp16"),
        (dict(n_layers=32, n_kv_heads=8, head_dim=128, context=8192, batch=2, bytes_per_value=2),
         "Llama-3-8B, 8192 tokens, batch 2"),
    ]
    for kwargs, label in cases:
        args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        what = f"kv_cache_bytes({args}) ({label})"
        got = _number(call(student, **kwargs, what="kv_cache_bytes"), what)
        expected = memory.kv_cache_bytes(**kwargs)
        if _near(got, expected / 2):
            raise CheckFailed(f"{what}: got {got:,.0f}, half the expected {expected:,.0f}. The cache holds a key "
                              "AND a value vector for every token: multiply by 2.")
        if _near(got, expected / kwargs["batch"]) and kwargs["batch"] > 1:
            raise CheckFailed(f"{what}: got {got:,.0f}; every sequence in the batch has its own cache, so "
                              "multiply by batch.")
        if _near(got, expected / kwargs["bytes_per_value"]):
            raise CheckFailed(f"{what}: got {got:,.0f}, which counts values, not bytes: multiply by "
                              "bytes_per_value.")
        if _near(got, expected / GIB):
            raise CheckFailed(f"{what}: got {got:.4g}, which looks like GiB; return bytes.")
        expect_close(got, expected, what, rel=1e-9,
                     hint="Bytes = 2 (key and value) x layers x kv heads x head_dim x context x batch x bytes per "
                          "value.")
    passed("kv_cache_bytes: Llama-2-7B at 4096 tokens in fp16 needs exactly 2 GiB of KV cache.")


@check(forbids=("course_utils.models.memory.nf4_bits_per_param",))
def nf4_bits_per_param(student: Callable[..., float]) -> None:
    """``nf4_bits_per_param(block_size, double_quant, dq_block_size)``: bits per weight of NF4 storage."""
    cases = [(64, False, 256), (64, True, 256), (128, False, 256), (32, True, 128)]
    for block_size, double_quant, dq_block_size in cases:
        what = f"nf4_bits_per_param(block_size={block_size}, double_quant={double_quant}, dq_block_size={dq_block_size})"
        got = _number(call(student, block_size=block_size, double_quant=double_quant, dq_block_size=dq_block_size,
                           what="nf4_bits_per_param"), what)
        expected = memory.nf4_bits_per_param(block_size, double_quant=double_quant, dq_block_size=dq_block_size)
        if _near(got, expected / 8):
            raise CheckFailed(f"{what}: got {got:.6g}, which is bytes; return bits per weight.")
        if _near(got, expected - 4):
            raise CheckFailed(f"{what}: got {got:.6g}, only the overhead of the constants; add the 4 bits of "
                              "the weight itself.")
        if double_quant and _near(got, 4 + 8 / block_size):
            raise CheckFailed(f"{what}: got {got:.6g}; you forgot the second-level fp32 constant, one per "
                              "dq_block_size first-level constants: add 32 / (block_size * dq_block_size).")
        if double_quant and _near(got, memory.nf4_bits_per_param(block_size)):
            raise CheckFailed(f"{what}: got {got:.6g}, the value without double quantization. With it, each "
                              "block's constant takes 8 bits instead of 32, plus a shared fp32 constant.")
        expect_close(got, expected, what, rel=1e-9,
                     hint="Without double quantization: 4 + 32 / block_size. With it: 4 + 8 / block_size + "
                          "32 / (block_size * dq_block_size).")
    passed("nf4_bits_per_param: NF4 costs 4.5 bits per weight, about 4.127 with double quantization.")


# ---------------------------------------------------------------------------------------------------------------
# Experiment (easy): the KV cache, measured


@check()
def kv_cache_experiment(student: Callable[..., float], probe: experiments.Probe | None = None) -> None:
    """``bytes_per_token(cache_bytes)``: measure the tiny Llama's cache at several lengths; return its slope."""
    probe = probe or experiments.kv_cache_probe()
    what = "bytes_per_token(cache_bytes)"
    got = _number(run_experiment(student, probe, "bytes_per_token"), what)
    contexts = sorted(probe.values("context"))
    expect(len(contexts) >= 3, f"{what} measured {len(contexts)} context length(s); measure at least three, so "
                               "that your table shows whether the cache grows in a straight line.")
    expect(contexts[-1] >= 4 * contexts[0], f"{what} measured contexts {contexts}: let the longest be at least "
                                            "four times the shortest, or the slope is hard to read.")
    sizes = [probe.measured(context=context)["bytes"] for context in contexts]
    expect(all(size > 0 for size in sizes), f"the cache came back empty: {sizes}")
    slope = (sizes[-1] - sizes[0]) / (contexts[-1] - contexts[0])
    for context, size in zip(contexts, sizes):
        expect(math.isclose(size, sizes[0] + slope * (context - contexts[0]), rel_tol=0.01),
               f"the measured cache is not a straight line in the context: {dict(zip(contexts, sizes))}")
    if _near(got, slope / 2) or _near(got, slope * 2):
        raise CheckFailed(f"{what}: got {got:,.0f}, a factor 2 from the slope of your table ({slope:,.0f} bytes "
                          "per token). Read the slope off the table: bytes added / tokens added.")
    expect_close(got, slope, what, rel=1e-6, hint="Return the slope of your table: (bytes at the longest context "
                 "- bytes at the shortest) / (the number of tokens between them).")
    passed_experiment(f"bytes_per_token: the cache grows by {got:,.0f} bytes per token", probe)


# ---------------------------------------------------------------------------------------------------------------
# Debugging exercise: an inference estimate that runs but is wrong


@check(forbids=("course_utils.models.memory.kv_cache_bytes", "course_utils.models.memory.weights_bytes",
                "course_utils.models.memory.weights_gib"))
def inference_gib_debugged(student: Callable[..., float]) -> None:
    """``inference_gib(n_params, n_layers, n_kv_heads, head_dim, context, batch)``: bf16 weights + KV cache, GiB."""
    cases = [(6_738_415_616, 32, 32, 128, 4096, 1, "Llama-2-7B, 4096 tokens"),
             (8_030_261_248, 32, 8, 128, 8192, 2, "Llama-3-8B, 8192 tokens, batch 2"),
             (1_000_000, 1, 1, 1, 1, 1, "one million parameters, one token")]
    for n_params, n_layers, n_kv_heads, head_dim, context, batch, label in cases:
        what = f"inference_gib for {label}"
        got = _number(call(student, n_params, n_layers, n_kv_heads, head_dim, context, batch,
                           what="inference_gib"), what)
        weights = n_params * 2 / GIB
        cache = memory.kv_cache_bytes(n_layers, n_kv_heads, head_dim, context, batch, 2) / GIB
        expected = weights + cache
        if not math.isclose(got, expected, rel_tol=1e-6):
            raise CheckFailed(
                f"{what}: your estimate is {got:.4g} GiB. The model is loaded in bf16; its checkpoint alone "
                f"holds {weights:.4g} GiB, and section 9's table gives its cache at this length. Compare each "
                "part of the estimate with those two figures.")
    passed("inference_gib: bf16 weights (2 bytes each) plus a cache of keys AND values.")
