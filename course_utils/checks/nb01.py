"""Checks for Notebook 01 (what save_pretrained saves): the header parser, the exponent entropy, one tensor by offsets,
and the experiment that chooses the dtype to save in."""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import math
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from course_utils.checks import (
    CheckFailed,
    DelegationError,
    call,
    check,
    expect,
    expect_close,
    expect_reproduced,
    library_calls,
    passed,
    passed_experiment,
    run_experiment,
)
from course_utils.storage import compression, safetensors_io

# ---------------------------------------------------------------------------------------------------------------
# Test files, built fresh by every check


def _example_tensors() -> dict[str, Any]:
    import torch

    generator = torch.Generator().manual_seed(1)
    return {
        "embed.weight": (torch.randn(48, 16, generator=generator) * 0.02).to(torch.bfloat16),
        "norm.weight": torch.ones(16),
        "proj.weight": (torch.randn(16, 24, generator=generator) * 0.05).half(),
        "positions": torch.arange(10, dtype=torch.int64),
        "proj.bias": torch.randn(24, generator=generator),
    }


def _hand_made_file(path: Path) -> None:
    """A file written byte by byte: an unpadded header, tensors stored out of name order, unusual metadata."""
    import torch

    first = torch.tensor([[1.5, -2.0], [0.25, 8.0]], dtype=torch.float32)
    second = torch.tensor([3, 1, 4], dtype=torch.int16)
    header = {"z.first": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
              "a.second": {"dtype": "I16", "shape": [3], "data_offsets": [16, 22]},
              "__metadata__": {"origin": "by hand", "format": "pt"}}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + first.numpy().tobytes() + second.numpy().tobytes())


@contextlib.contextmanager
def _example_files() -> Iterator[list[tuple[str, Path]]]:
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = []
        save_file(_example_tensors(), folder / "with_metadata.safetensors", metadata={"format": "pt", "step": "7"})
        files.append(("a file with __metadata__", folder / "with_metadata.safetensors"))
        save_file({"w": _example_tensors()["proj.bias"]}, folder / "no_metadata.safetensors")
        files.append(("a file without __metadata__", folder / "no_metadata.safetensors"))
        _hand_made_file(folder / "by_hand.safetensors")
        files.append(("a hand-made file with an unpadded header", folder / "by_hand.safetensors"))
        yield files


def _expected_parts(path: Path) -> tuple[int, dict[str, str], dict[str, dict[str, Any]]]:
    header = safetensors_io.read_header(path)
    tensors = {t.name: {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [t.start, t.end]} for t in header}
    return header.header_size, header.metadata, tensors


class _CountingProxy:
    """Wraps a binary file opened by the student's code and counts the bytes it hands back."""

    def __init__(self, inner: Any, counter: dict[str, int]) -> None:
        self._inner, self._counter = inner, counter

    def _count(self, data: Any) -> Any:
        self._counter["bytes"] += len(data) if isinstance(data, (bytes, bytearray, str)) else 0
        return data

    def read(self, *args: Any) -> Any:
        return self._count(self._inner.read(*args))

    def read1(self, *args: Any) -> Any:
        return self._count(self._inner.read1(*args))

    def readline(self, *args: Any) -> Any:
        return self._count(self._inner.readline(*args))

    def readlines(self, *args: Any) -> Any:
        lines = self._inner.readlines(*args)
        self._counter["bytes"] += sum(map(len, lines))
        return lines

    def readinto(self, buffer: Any) -> Any:
        count = self._inner.readinto(buffer)
        self._counter["bytes"] += count or 0
        return count

    def __iter__(self) -> Iterator[Any]:
        for line in self._inner:
            yield self._count(line)

    def __enter__(self) -> _CountingProxy:
        self._inner.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._inner.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@contextlib.contextmanager
def _count_reads_of(path: Path) -> Iterator[dict[str, int]]:
    """Count bytes read from ``path`` through open() / io.open() / Path.open() while the block runs."""
    counter = {"bytes": 0}
    real_open = io.open
    target = path.resolve()

    def counting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        handle = real_open(file, *args, **kwargs)
        try:
            same = isinstance(file, (str, Path)) and Path(file).resolve() == target
        except OSError:
            same = False
        return _CountingProxy(handle, counter) if same else handle

    with mock.patch.object(builtins, "open", counting_open), mock.patch.object(io, "open", counting_open):
        yield counter


# ---------------------------------------------------------------------------------------------------------------
# Exercise 1: the header parser


@check(forbids=(
    "course_utils.storage.safetensors_io.read_header", "course_utils.storage.safetensors_io.parse_header_bytes",
    "course_utils.storage.safetensors_io.parse_bytes",
    *library_calls("this exercise asks you to read the header yourself, from the file's bytes",
                   "safetensors.safe_open"),
))
def parse_header(student: Callable[[Any], Any]) -> None:
    """``parse_safetensors_header(path)`` returns ``(header_size, metadata, tensors)``."""
    with _example_files() as files:
        for label, path in files:
            size, metadata, tensors = _expected_parts(path)
            hint = ("Read 8 bytes, unpack them with struct.unpack('<Q', ...) (little-endian unsigned 64-bit), "
                    "then read exactly that many bytes and json.loads them.")
            try:
                with _count_reads_of(path) as counter:
                    result = call(student, str(path), what="parse_safetensors_header")
            except DelegationError:
                raise  # its message says what to do; the format hint would only distract
            except CheckFailed as exc:
                raise CheckFailed(f"On {label}: {str(exc).rstrip('.')}. {hint}") from None
            expect(isinstance(result, (tuple, list)) and len(result) == 3,
                   f"On {label}: expected a tuple (header_size, metadata, tensors), got {type(result).__name__} "
                   f"{str(result)[:80]}.")
            got_size, got_metadata, got_tensors = result
            if got_size == size + 8:
                raise CheckFailed(f"On {label}: header_size is {got_size}, which counts the 8-byte length too; "
                                  f"return N, the number of JSON bytes ({size}).")
            expect(got_size == size, f"On {label}: header_size should be {size}, got {got_size!r}. {hint}")
            expect(isinstance(got_tensors, dict),
                   f"On {label}: tensors should be a dict of name -> entry, got {type(got_tensors).__name__}.")
            if "__metadata__" in got_tensors:
                raise CheckFailed(f"On {label}: tensors contains '__metadata__'. It is not a tensor: return it "
                                  "separately as metadata and leave it out of tensors.")
            if got_metadata is None and not metadata:
                raise CheckFailed(f"On {label}: metadata is None; when the file has no __metadata__, return an "
                                  "empty dict {} so callers can always use it as a dict.")
            expect(got_metadata == metadata, f"On {label}: metadata should be {metadata!r}, got {got_metadata!r}.")
            expect(set(got_tensors) == set(tensors),
                   f"On {label}: expected the tensors {sorted(tensors)}, got {sorted(got_tensors)}.")
            for name, entry in tensors.items():
                got = got_tensors[name]
                expect(isinstance(got, dict) and {k: got.get(k) for k in entry} == entry,
                       f"On {label}: the entry of {name!r} should be {entry}, got {got!r}. Return the JSON "
                       "entries as they are.")
            if counter["bytes"] > 8 + size:
                raise CheckFailed(f"On {label}: the answer is right, but your function read {counter['bytes']:,} "
                                  f"bytes; the header needs only 8 + {size} = {8 + size}. Read the 8-byte length, "
                                  "then exactly N more bytes: never the tensor data (a 7B checkpoint has 13 GB of it).")
    passed("parse_safetensors_header: 8 bytes of length, N bytes of JSON, and not one byte of tensor data.")


# ---------------------------------------------------------------------------------------------------------------
# Exercise 2: the entropy of bf16 exponents


def _entropy_cases() -> list[tuple[str, Any]]:
    import torch

    generator = torch.Generator().manual_seed(2)
    powers = torch.tensor([2.0 ** k for k in range(-6, 2)] * 64)  # 8 exponents, equally often
    return [
        ("weights ~ N(0, 0.02) (signs mixed)", (torch.randn(4096, generator=generator) * 0.02).bfloat16()),
        ("all ones (one exponent)", torch.ones(300, dtype=torch.bfloat16)),
        ("eight powers of two, equally often", powers.bfloat16()),
        ("the same powers, half of them negative", (powers * torch.tensor([1.0, -1.0]).repeat(256)).bfloat16()),
        ("uniform in [-1, 1]", (torch.rand(5000, generator=generator) * 2 - 1).bfloat16()),
    ]


@check(forbids=("course_utils.storage.compression.bf16_exponents", "course_utils.storage.compression.entropy_bits"))
def exponent_entropy(student: Callable[[Any], Any]) -> None:
    """``exponent_entropy(tensor)``: bits per value of the 8-bit exponent field of a bf16 tensor."""
    for label, tensor in _entropy_cases():
        bits = compression.float16_bits(tensor)
        expected = compression.entropy_bits(compression.bf16_exponents(bits))
        got = call(student, tensor.clone(), what="exponent_entropy")
        what = f"exponent_entropy on {label}"
        if isinstance(got, bool) or not isinstance(got, (int, float)) and not hasattr(got, "__float__"):
            raise CheckFailed(f"{what}: expected a number (bits per value), got {type(got).__name__}.")
        value = float(got)
        expect(math.isfinite(value), f"{what}: expected a finite number, got {value!r}. Leave out the symbols that "
                                     "never occur: 0 * log(0) counts as 0.")
        high_byte = compression.entropy_bits((bits >> 8).astype("uint8"))
        if not math.isclose(value, expected, abs_tol=1e-6):
            if math.isclose(value, high_byte, abs_tol=1e-6):
                raise CheckFailed(f"{what}: got {value:.4f}, the entropy of the whole high byte, which holds the sign "
                                  f"bit too. The exponent is bits 14..7: (bits >> 7) & 0xFF. Expected {expected:.4f}.")
            if expected and math.isclose(value, expected * math.log(2), rel_tol=1e-6):
                raise CheckFailed(f"{what}: got {value:.4f}, which is in nats (natural log). Use log2 for bits.")
            if expected and math.isclose(value, expected * tensor.numel(), rel_tol=1e-6):
                raise CheckFailed(f"{what}: got {value:.4f}, the total over all {tensor.numel()} values; return bits "
                                  "per value.")
            expect_close(value, expected, what, abs_=1e-6,
                         hint="Count how often each exponent occurs, p = count / n, entropy = -sum(p * log2(p)).")
    passed("exponent_entropy: a bf16 exponent carries far fewer than its 8 bits in a trained model.")


# ---------------------------------------------------------------------------------------------------------------
# Exercise 3: one tensor by its offsets


@check(forbids=(
    "course_utils.storage.safetensors_io.read_tensor", "course_utils.storage.safetensors_io.tensor_from_bytes",
    "course_utils.storage.safetensors_io.read_rows", "course_utils.storage.safetensors_io.read_all",
    *library_calls("this exercise asks you to read the tensor yourself, from its offsets",
                   "safetensors.safe_open", "safetensors.torch.load_file", "safetensors.torch.load"),
))
def read_tensor_by_offsets(student: Callable[..., Any]) -> None:
    """``read_tensor_by_offsets(path, header_size, entry)``: the tensor, read from 8 + N + start."""
    import torch
    from safetensors import safe_open

    with _example_files() as files:
        _, path = files[0]
        header = safetensors_io.read_header(path)
        with safe_open(str(path), "pt") as f:
            for info in header:
                entry = {"dtype": info.dtype, "shape": list(info.shape), "data_offsets": [info.start, info.end]}
                what = f"read_tensor_by_offsets for {info.name!r} ({info.dtype}, shape {list(info.shape)})"
                got = call(student, str(path), header.header_size, dict(entry), what="read_tensor_by_offsets")
                expected = f.get_tensor(info.name)
                expect(isinstance(got, torch.Tensor),
                       f"{what}: expected a torch tensor, got {type(got).__name__}. torch.frombuffer(bytearray(raw), "
                       "dtype=...) turns bytes into a tensor.")
                expect(tuple(got.shape) == tuple(expected.shape),
                       f"{what}: expected shape {list(expected.shape)}, got {list(got.shape)}. Reshape with "
                       "entry['shape'].")
                if got.dtype != expected.dtype:
                    raise CheckFailed(f"{what}: expected dtype {expected.dtype}, got {got.dtype}."
                                      + (" BF16 is not float16: same size, different bits." if info.dtype == "BF16"
                                         else ""))
                if not torch.equal(got.view(torch.uint8) if got.dtype != torch.bool else got,
                                   expected.view(torch.uint8) if expected.dtype != torch.bool else expected):
                    raise CheckFailed(f"{what}: the values differ from safe_open's. " + _offset_hint(path, header, info, got))
    passed("read_tensor_by_offsets: every tensor equals safe_open's, bit for bit.")


def _offset_hint(path: Path, header: safetensors_io.SafetensorsHeader, info: safetensors_io.TensorInfo,
                 got: Any) -> str:
    """Say which wrong starting position the student's bytes came from, if we can tell."""
    import torch

    data = path.read_bytes()
    raw = got.contiguous().view(torch.uint8).numpy().tobytes()
    guesses = {info.start: "data_offsets count from the start of the data block, not of the file: add 8 + header_size",
               header.header_size + info.start: "you skipped the JSON header but not the 8-byte length in front of it",
               8 + info.start: "you skipped the 8-byte length but not the JSON header (header_size bytes)"}
    for position, message in guesses.items():
        if data[position:position + len(raw)] == raw:
            return f"Your bytes start at file position {position}: {message}."
    return "Seek to 8 + header_size + start and read end - start bytes."


# ---------------------------------------------------------------------------------------------------------------
# Experiment (easy): the dtype to save in


def dtype_by_the_rule(rows: list[dict[str, Any]]) -> str:
    """The exercise's rule on the rows measured: of the files at most 55% of fp32's whose next tokens all agree,
    the closest logits (float32 when none qualifies)."""
    full = next(row["bytes"] for row in rows if row["dtype"] == "float32")
    candidates = [row for row in rows if row["agreement"] == 1.0 and row["bytes"] <= 0.55 * full]
    return min(candidates, key=lambda row: row["max_logit_error"])["dtype"] if candidates else "float32"


@check()
def save_dtype_experiment(student: Callable[..., Any], probe: Any = None) -> None:
    """``choose_dtype(save_as)``: save in float32 and the dtypes you choose, then choose by the exercise's rule."""
    from course_utils.checks import experiments

    probe = probe or experiments.save_dtype_probe()
    got = run_experiment(student, probe, "choose_dtype")
    measured = probe.values("dtype")
    expect("float32" in measured and len(measured) >= 2,
           f"choose_dtype measured {measured}: measure float32 (the rule's reference) and at least one of "
           f"{', '.join(d for d in experiments.SAVE_DTYPES if d != 'float32')}, then choose.")
    for row in probe.rows:
        expect(row["bytes"] > 0 and 0.0 <= row["agreement"] <= 1.0 and math.isfinite(row["max_logit_error"]),
               f"a measurement is out of range: {row}")
    expect_reproduced(probe, "choose_dtype", ("bytes", "max_logit_error", "agreement"))
    expected = dtype_by_the_rule(probe.rows)
    expect(isinstance(got, str), f"choose_dtype: return the dtype's name as a string (e.g. 'float32'), got {got!r}.")
    if got != expected:
        raise CheckFailed(f"choose_dtype returned {got!r}; by the rule (files at most 55% of float32's whose "
                          f"predictions all agree with float32, then the smallest logit error) your table gives "
                          f"{expected!r}. Read the table again.")
    passed_experiment(f"choose_dtype: {got} by the rule, from {', '.join(sorted(measured))} (bytes of "
                      "model.safetensors, largest logit error against float32, share of positions with float32's "
                      "next token)", probe)


# ---------------------------------------------------------------------------------------------------------------
# Debugging exercise: a converter from the pickled format that runs, and is wrong

DEBUG_PROMPT = "Once upon a time, a little fox"
_HOSTILE_RAN: list[str] = []  # what the hostile file's code appended when a loader unpickled it


class _HiddenCode:
    """Pickles as a call of exec: whoever unpickles it without ``weights_only=True`` runs the code (harmless here)."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return exec, ("import course_utils.checks.nb01 as m; m._HOSTILE_RAN.append('ran')",)


def write_hostile_bin(path: Path) -> None:
    """A ``pytorch_model.bin`` whose pickle runs a line of Python when loaded unsafely (it only records that it ran)."""
    import torch

    _HOSTILE_RAN.clear()
    torch.save({"model.norm.weight": torch.ones(4), "note": _HiddenCode()}, path)


def hostile_code_ran() -> bool:
    """Whether the code hidden in the last :func:`write_hostile_bin` file ran."""
    return bool(_HOSTILE_RAN)


def _converted_logits(student: Callable[..., Any], model_name: str, folder: Path) -> tuple[Any, Any, list[str]]:
    """Save ``model_name``'s state dict as a pickle, convert it with the student's function, load the folder."""
    import torch
    from transformers import AutoModelForCausalLM

    from course_utils.ground import sources

    model, tokenizer = sources.load_causal_lm(model_name, verbose=False)
    old, new = folder / "old", folder / "new"
    old.mkdir()
    model.save_pretrained(new)  # config.json and generation_config.json; its weights are replaced below
    (new / "model.safetensors").unlink()
    torch.save(model.state_dict(), old / "pytorch_model.bin")
    call(student, old / "pytorch_model.bin", new / "model.safetensors", what="bin_to_safetensors")
    expect((new / "model.safetensors").exists(), "bin_to_safetensors: write the safetensors file at out_path.")
    reloaded, info = AutoModelForCausalLM.from_pretrained(new, output_loading_info=True)
    ids = tokenizer(DEBUG_PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        return model.eval()(ids).logits, reloaded.eval()(ids).logits, sorted(info["missing_keys"])



@check()
def bin_to_safetensors_debugged(student: Callable[..., Any]) -> None:
    """``bin_to_safetensors(bin_path, out_path)``: a pickled state dict rewritten as safetensors, safely."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the missing-keys report goes into the check's message instead
    hf_logging.disable_progress_bar()
    try:
        with tempfile.TemporaryDirectory(prefix="nb01-debug-") as scratch:
            for model_name, label in (("tiny-llama", "the tiny Llama (tie_word_embeddings: false)"),
                                      ("tiny-gpt2", "the tiny GPT-2 (tie_word_embeddings: true)")):
                folder = Path(scratch) / model_name
                folder.mkdir()
                expected, got, missing = _converted_logits(student, model_name, folder)
                difference = (got - expected).abs().max().item()
                if difference > 1e-5:
                    raise CheckFailed(
                        f"bin_to_safetensors on {label}: the folder loads, but its model computes other logits "
                        f"(the largest difference is {difference:.3g}; an exact copy gives 0). from_pretrained "
                        f"found no weights in your file for {missing or 'nothing: every name was there'} and "
                        "initialised those at random. Compare the names in your file with the state dict's, and "
                        "section 1's config table with what the converter assumes.")
            hostile = Path(scratch) / "from_a_stranger.bin"
            write_hostile_bin(hostile)
            try:
                call(student, hostile, Path(scratch) / "from_a_stranger.safetensors", what="bin_to_safetensors")
            except DelegationError:
                raise
            except CheckFailed:
                pass  # refusing the file is right
            if hostile_code_ran():
                raise CheckFailed(
                    "bin_to_safetensors on a .bin file from a stranger: loading it ran the Python code hidden in "
                    "its pickle (here it only recorded that it ran; it could as well have read your files or your "
                    "Hub token). Section 2 says how torch.load can open a pickle without running anything.")
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    passed("bin_to_safetensors: tensors only (weights_only=True), every weight kept, a tied one stored once.")
