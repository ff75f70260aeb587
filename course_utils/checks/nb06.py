"""Checks for Notebook 06 (Unsloth, exporting, running on a Mac): llama.cpp's q/k permutation, Q8_0 blocks,
the size of a GGUF file, pointing an adapter at another base model, and the experiment that chooses the GGUF type."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from course_utils.checks import (
    CheckFailed,
    call,
    check,
    expect,
    expect_equal,
    expect_reproduced,
    library_calls,
    passed,
    passed_experiment,
    run_experiment,
    tiny_llama_sizes,
)
from course_utils.storage import gguf_io


def _tensor(value: object, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise CheckFailed(f"{what}: expected a torch.Tensor, got {type(value).__name__}.")
    return value


# ------------------------------------------------------------------------------------------------ permute_qk
@check(forbids=("course_utils.storage.gguf_io.permute_qk",))
def permute_qk(student: Callable[[torch.Tensor, int], torch.Tensor]) -> None:
    """``permute_qk(weight, n_head)``: transformers' row order of a q/k projection -> llama.cpp's."""
    cases = [(4, 8, 3, "4 heads of 8 rows (a query projection)"), (2, 8, 5, "2 key/value heads (grouped-query)"),
             (1, 4, 2, "one head of 4 rows")]
    for n_head, head_dim, columns, label in cases:
        weight = torch.arange(n_head * head_dim * columns, dtype=torch.float32).reshape(n_head * head_dim, columns)
        what = f"permute_qk on {label}, weight {tuple(weight.shape)}"
        got = _tensor(call(student, weight.clone(), n_head, what="permute_qk"), what)
        expected = gguf_io.permute_qk(weight, n_head)
        expect_equal(tuple(got.shape), tuple(weight.shape), f"{what}: shape",
                     "The permutation reorders rows; the shape stays the same.")
        if torch.equal(got, weight) and not torch.equal(expected, weight):
            raise CheckFailed(f"{what}: the rows came back in their original order. Within each head, rows j and "
                              "j + head_dim/2 must end up next to each other.")
        if torch.equal(got, gguf_io.unpermute_qk(weight, n_head)) and not torch.equal(expected, got):
            raise CheckFailed(f"{what}: this is the inverse (llama.cpp's order back to transformers'). Reshape to "
                              "(n_head, 2, head_dim // 2, ...) and swap the two middle axes.")
        if not torch.equal(got, expected):
            first = int((got != expected).any(dim=-1).nonzero()[0])
            raise CheckFailed(f"{what}: row {first} holds {got[first, 0].item():g}... where "
                              f"{expected[first, 0].item():g}... was expected. Reshape to (n_head, 2, head_dim // 2, "
                              "columns), swap axes 1 and 2, reshape back.")
    passed("permute_qk: each head's two halves are interleaved, pair by pair, as llama.cpp's rotation expects.")


# ------------------------------------------------------------------------------------------------ q8_0
@check(forbids=("course_utils.storage.gguf_io.quantize_q8_0",
                *library_calls("this exercise asks you to write Q8_0 quantization yourself",
                               "gguf.quants.quantize")))
def q8_0_quantize(student: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> None:
    """``q8_0_quantize(x)`` -> ``(scales, codes)``: per block of 32, an fp16 scale and 32 int8 codes."""
    g = torch.Generator().manual_seed(6)
    halves = torch.zeros(32)
    halves[0], halves[1], halves[2] = 127.0, 0.5, -2.5  # scale 1: 0.5 and -2.5 are exact halves
    cases = [(torch.randn(2, 64, generator=g), "a 2 x 64 tensor of normal values"),
             (torch.randn(96, generator=g) * torch.tensor([0.01, 1.0, 100.0]).repeat_interleave(32),
              "three blocks of very different scales"),
             (torch.cat([torch.zeros(32), -torch.rand(32, generator=g)]), "a block of zeros and a negative block"),
             (halves, "a block with exact halves (0.5 and -2.5 after scaling)")]
    for x, label in cases:
        what = f"q8_0_quantize on {label}"
        result = call(student, x.clone(), what="q8_0_quantize")
        if not (isinstance(result, tuple) and len(result) == 2):
            raise CheckFailed(f"{what}: return a tuple (scales, codes), got {type(result).__name__}.")
        scales, codes = (_tensor(t, what) for t in result)
        raw = gguf_io.quantize_q8_0(x.reshape(-1, 32))
        expected_scales = torch.from_numpy(raw[:, :2].copy().view(np.float16).reshape(-1))
        expected_codes = torch.from_numpy(raw[:, 2:].copy().view(np.int8))
        expect_equal(tuple(scales.shape), tuple(expected_scales.shape), f"{what}: scales shape",
                     "One scale per block of 32 values.")
        expect_equal(tuple(codes.shape), tuple(expected_codes.shape), f"{what}: codes shape",
                     "Codes come as (number of blocks, 32).")
        expect(scales.dtype == torch.float16, f"{what}: scales should be torch.float16 (ggml stores them in 2 "
                                              f"bytes), got {scales.dtype}.")
        expect(codes.dtype == torch.int8, f"{what}: codes should be torch.int8, got {codes.dtype}.")
        if not torch.equal(scales, expected_scales):
            ratio = (scales.float() / expected_scales.float().clamp_min(1e-30)).nanmean().item()
            raise CheckFailed(f"{what}: the scales differ (yours are about {ratio:.3g}x the expected ones). Each "
                              "block's scale is its largest absolute value divided by 127.")
        if not torch.equal(codes, expected_codes):
            if label.startswith("a block with exact halves"):
                raise CheckFailed(f"{what}: halves must round away from zero, as C's roundf does in llama.cpp "
                                  "(0.5 -> 1, -2.5 -> -3); torch.round sends them to the even neighbour. Use "
                                  "torch.sign(v) * torch.floor(v.abs() + 0.5).")
            worst = (codes.int() - expected_codes.int()).abs().max().item()
            raise CheckFailed(f"{what}: codes differ by up to {worst}. Multiply each value by 1 / scale (computed "
                              "in float32, before the scale is rounded to fp16) and round.")
    passed("q8_0_quantize: one fp16 scale and 32 int8 codes per block, byte for byte what llama.cpp writes.")


# ------------------------------------------------------------------------------------------------ GGUF size
@check(forbids=(
    "course_utils.storage.gguf_io.tensor_bytes", "course_utils.storage.gguf_io.bits_per_weight",
    "course_utils.serving.export.gguf_size_estimate"
))
def gguf_tensor_bytes(student: Callable[[list[tuple[int, ...]], str], int]) -> None:
    """``gguf_tensor_bytes(shapes, file_type)``: bytes of tensors of these shapes in a GGUF of ``file_type``."""
    s = tiny_llama_sizes()
    h, kv, mlp, vocab = s["hidden"], s["kv"], s["mlp"], s["vocab"]
    tiny = [(vocab, h), (h,), (h, h), (kv, h), (kv, h), (h, h), (h,), (mlp, h), (mlp, h), (h, mlp), (h,), (vocab, h)]
    cases = [([(4096, 4096)], "f16", "one 4096 x 4096 weight"), ([(4096, 4096)], "q8_0", "one 4096 x 4096 weight"),
             ([(4096,)], "q8_0", "a norm (1-D)"), ([(128, 341)], "q8_0", "a 128 x 341 weight (rows of 341 values)"),
             (tiny, "f16", "one block of tiny-llama plus embeddings"),
             (tiny, "q8_0", "one block of tiny-llama plus embeddings"), (tiny, "f32", "the same, in f32")]
    for shapes, file_type, label in cases:
        what = f"gguf_tensor_bytes for {label} in {file_type}"
        got = call(student, list(shapes), file_type, what="gguf_tensor_bytes")
        expected = sum(gguf_io.tensor_bytes(shape, file_type) for shape in shapes)
        if got == expected:
            continue
        hint = ""
        if len(shapes) == 1 and len(shapes[0]) == 1:
            hint = "1-D tensors (norms) stay float32 in every file type: 4 bytes per value."
        elif file_type == "q8_0" and shapes[0][-1] % 32:
            hint = ("A row of 341 values does not split into blocks of 32, so this tensor falls back to f16 "
                    "(2 bytes per value), as llama.cpp does.")
        elif file_type == "q8_0":
            hint = "Q8_0 stores each block of 32 values in 34 bytes (a 2-byte scale and 32 one-byte codes)."
        raise CheckFailed(f"{what}: expected {expected:,} bytes, got {got!r}. {hint}".strip())
    passed("gguf_tensor_bytes: f32 norms, 2 bytes per f16 weight, 34 bytes per Q8_0 block of 32, f16 fallback.")


# ------------------------------------------------------------------------------------------------ adapter base
@check(forbids=("course_utils.serving.export.retarget_adapter",))
def point_adapter_at(student: Callable[[Path, str, Path], object]) -> None:
    """``point_adapter_at(adapter_dir, base, out_dir)``: a copy of the adapter folder naming ``base``."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "lora"
        source.mkdir()
        config = {"base_model_name_or_path": "unsloth/llama-3.2-1b-bnb-4bit", "r": 16, "lora_alpha": 32,
                  "peft_type": "LORA", "target_modules": ["q_proj", "v_proj"]}
        (source / "adapter_config.json").write_text(json.dumps(config, indent=2))
        (source / "adapter_model.safetensors").write_bytes(b"weights")
        (source / "tokenizer.json").write_text("{}")
        out = Path(tmp) / "lora-16bit"
        base = "meta-llama/Llama-3.2-1B"
        call(student, source, base, out, what="point_adapter_at")
        original = json.loads((source / "adapter_config.json").read_text())
        expect(original == config, "point_adapter_at changed the original adapter_config.json; copy the folder "
                                   "first and edit only the copy (the original still describes how it was trained).")
        expect((out / "adapter_config.json").exists(), f"point_adapter_at: no adapter_config.json in out_dir "
                                                       f"({out.name}); copy the whole folder there.")
        copied = json.loads((out / "adapter_config.json").read_text())
        expect_equal(copied.get("base_model_name_or_path"), base, "the copy's base_model_name_or_path",
                     "Set that key to the new base.")
        expect_equal({k: v for k, v in copied.items() if k != "base_model_name_or_path"},
                     {k: v for k, v in config.items() if k != "base_model_name_or_path"},
                     "the copy's other settings", "Change only base_model_name_or_path; r, alpha and the target "
                     "modules must stay as trained.")
        for name in ("adapter_model.safetensors", "tokenizer.json"):
            expect((out / name).exists(), f"point_adapter_at: {name} is missing from the copy; copy every file.")
    passed("point_adapter_at: a copy that names the 16-bit base, the original left as trained.")


# ---------------------------------------------------------------------------------------------------------------
# Experiment (easy): which GGUF type would you ship?

SAME_QUALITY = 0.01  # perplexity within 1% of the f32 file's


def gguf_by_the_rule(rows: list[dict[str, object]]) -> str:
    """Of the types measured, the smallest file whose perplexity is within 1% of the f32 file's."""
    full = next(float(row["perplexity"]) for row in rows if row["file_type"] == "f32")
    good = [row for row in rows if float(row["perplexity"]) <= (1 + SAME_QUALITY) * full]
    return str(min(good, key=lambda row: row["bytes"])["file_type"])


@check()
def gguf_experiment(student: Callable[..., object], probe: object = None) -> None:
    """``choose_gguf(export_as)``: write f32 and the types you choose, then the smallest that scores like f32."""
    from course_utils.checks import experiments

    probe = probe or experiments.gguf_type_probe()
    got = run_experiment(student, probe, "choose_gguf")
    measured = probe.values("file_type")
    expect("f32" in measured and len(measured) >= 2,
           f"choose_gguf measured {measured}: write f32 (the rule's reference) and at least one of "
           f"{', '.join(t for t in gguf_io.FILE_TYPES if t != 'f32')}, then choose.")
    for row in probe.rows:
        expect(row["bytes"] > 0 and row["perplexity"] >= 1, f"a measurement is out of range: {row}")
    expect_reproduced(probe, "choose_gguf", ("bytes", "perplexity"))
    expected = gguf_by_the_rule(probe.rows)
    expect(got == expected, f"choose_gguf returned {got!r}; by the rule (the smallest file whose perplexity is "
                            f"within 1% of f32's) your table gives {expected!r}.")
    passed_experiment(f"choose_gguf: {got}, the smallest of {', '.join(sorted(measured))} that scores like f32",
                      probe)


# ---------------------------------------------------------------------------------------------------------------
# Debugging exercise: a converter whose file loads and computes something else

DEBUG_PROMPT = "Once upon a time, a little fox"


@check(forbids=("course_utils.storage.gguf_io.llama_tensors", "course_utils.storage.gguf_io.write_gguf"))
def llama_cpp_tensors_debugged(student: Callable[[object], object]) -> None:
    """``llama_cpp_tensors(model)``: every weight under its GGUF name, in the row order llama.cpp computes with."""
    import copy

    from course_utils.checks import experiments

    with experiments._quiet():  # no loading bar in the check's output
        shared, tokenizer = experiments._tiny_llama()
    model = copy.deepcopy(shared)  # the student's code may edit what it is given; the shared copy stays intact
    tensors = call(student, model, what="llama_cpp_tensors")
    expect(isinstance(tensors, dict) and all(isinstance(name, str) and isinstance(value, torch.Tensor)
                                             for name, value in tensors.items()),
           "llama_cpp_tensors: return a dict from GGUF tensor names (such as 'blk.0.attn_q.weight') to tensors.")
    ids = tokenizer(DEBUG_PROMPT, return_tensors="pt").input_ids
    with tempfile.TemporaryDirectory(prefix="nb06-debug-") as folder, experiments._no_gguf_bar():
        path = Path(folder) / "tiny-llama-f32.gguf"
        gguf_io.write_gguf(shared, tokenizer, path, "f32", tensors=tensors)
        try:
            reread, _ = gguf_io.load_with_transformers(path)
        except Exception as exc:  # noqa: BLE001 - a file transformers cannot read is the symptom itself
            raise CheckFailed(f"llama_cpp_tensors: transformers' GGUF reader cannot load the file written from "
                              f"your tensors: {type(exc).__name__}: {exc}") from None
    with torch.no_grad():
        expected, got = shared(ids).logits, reread(ids).logits
        relative = ((got - expected).abs().max() / expected.abs().max()).item()
        original = shared.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1]:]
        continued = reread.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1]:]
    if not relative < 1e-5:
        same = int((original == continued).sum())
        raise CheckFailed(
            f"llama_cpp_tensors: the f32 file written from your tensors loads, but transformers' GGUF reader "
            f"(which undoes llama.cpp's row order as llama.cpp computes with it) rebuilds a different model: its "
            f"logits differ from the original's by {relative:.2f} of the largest logit, and its greedy "
            f"continuation of {DEBUG_PROMPT!r} shares {same} of {len(original)} tokens "
            f"({tokenizer.decode(continued)!r} instead of {tokenizer.decode(original)!r}). An f32 file should "
            "differ by rounding only. Compare each kind of tensor your function writes (attn_q, attn_k, attn_v, "
            "...) with the model's, and the rows each one needs reordered with the head counts in the file's metadata (printed above).")
    passed("llama_cpp_tensors: q rows reordered per query head, k rows per key/value head, everything else "
           "as it is.")
