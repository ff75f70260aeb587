"""course_utils.checks.nb01: each check passes a right answer and fails, with a useful message, on wrong ones."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from course_utils.checks import CheckFailed, nb01


def _stub(*args, **kwargs):
    raise NotImplementedError()


# --- parse_header ----------------------------------------------------------------------------------------------


def parse_right(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return n, header.pop("__metadata__", {}), header


def parse_with_pathlib(path):
    with Path(path).open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    with Path(path).open("rb") as f:
        f.seek(8)
        header = json.loads(f.read(n))
    return n, header.pop("__metadata__", {}), header


def parse_whole_file(path):
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    return n, header.pop("__metadata__", {}), header


def parse_big_endian(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack(">Q", f.read(8))
        header = json.loads(f.read(n))
    return n, header.pop("__metadata__", {}), header


def parse_keeps_metadata(path):
    n, metadata, header = parse_right(path)
    return n, metadata, {**header, "__metadata__": metadata}


def parse_metadata_none(path):
    n, metadata, header = parse_right(path)
    return n, metadata or None, header


def parse_counts_eight(path):
    n, metadata, header = parse_right(path)
    return n + 8, metadata, header


def parse_drops_offsets(path):
    n, metadata, header = parse_right(path)
    return n, metadata, {k: {"dtype": v["dtype"], "shape": v["shape"]} for k, v in header.items()}


def test_parse_header_passes(capsys):
    nb01.parse_header(parse_right)
    nb01.parse_header(parse_with_pathlib)
    assert capsys.readouterr().out.startswith("\u2713 parse_safetensors_header")


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (parse_whole_file, "read .* bytes; the header needs only"),
    (parse_big_endian, "little-endian"),
    (parse_keeps_metadata, "tensors contains '__metadata__'"),
    (parse_metadata_none, "return an\nempty dict|empty dict"),
    (parse_counts_eight, "counts the 8-byte length too"),
    (parse_drops_offsets, "the entry of"),
    (lambda path: parse_right(path)[2], "expected a tuple"),
])
def test_parse_header_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb01.parse_header(wrong)


# --- exponent_entropy ------------------------------------------------------------------------------------------


def _histogram_entropy(values) -> float:
    counts = np.bincount(np.asarray(values).ravel())
    p = counts[counts > 0] / np.asarray(values).size
    return float(-(p * np.log2(p)).sum())


def _bits(tensor):
    return tensor.contiguous().view(torch.int16).numpy().view(np.uint16)


def entropy_right(tensor):
    return _histogram_entropy((_bits(tensor) >> 7) & 0xFF)


def entropy_through_fp32(tensor):
    """The fp32 exponent field (bits 30..23) holds the same values as bf16's: also right."""
    bits = tensor.float().view(torch.int32).numpy()
    return _histogram_entropy((bits >> 23) & 0xFF)


def test_exponent_entropy_passes(capsys):
    nb01.exponent_entropy(entropy_right)
    nb01.exponent_entropy(entropy_through_fp32)
    assert "exponent_entropy" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (lambda t: _histogram_entropy(_bits(t) >> 8), "holds the sign"),
    (lambda t: entropy_right(t) * math.log(2), "nats"),
    (lambda t: entropy_right(t) * t.numel(), "bits\nper value|per value"),
    (lambda t: str(entropy_right(t)), "expected a number"),
    (lambda t: float("nan"), "finite"),
    (lambda t: _histogram_entropy(_bits(t) & 0x7F), "expected about"),
])
def test_exponent_entropy_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb01.exponent_entropy(wrong)


# --- read_tensor_by_offsets ------------------------------------------------------------------------------------

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}


def _reader(skip=lambda n: 8 + n, dtypes=DTYPES, reshape=True):
    def read(path, header_size, entry):
        start, end = entry["data_offsets"]
        with open(path, "rb") as f:
            f.seek(skip(header_size) + start)
            raw = f.read(end - start)
        tensor = torch.frombuffer(bytearray(raw), dtype=dtypes[entry["dtype"]])
        return tensor.reshape(entry["shape"]) if reshape else tensor
    return read


def test_read_tensor_by_offsets_passes(capsys):
    nb01.read_tensor_by_offsets(_reader())
    assert "bit for bit" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (_reader(skip=lambda n: 0), "add 8 \\+ header_size"),
    (_reader(skip=lambda n: n), "not the 8-byte length"),
    (_reader(skip=lambda n: 8), "not the JSON header"),
    (_reader(dtypes={**DTYPES, "BF16": torch.float16}), "BF16 is not float16"),
    (_reader(reshape=False), "expected shape"),
    (lambda path, n, entry: _reader()(path, n, entry).numpy(), "expected a torch tensor"),
    (lambda path, n, entry: _reader()(path, n, entry) + 1, "values differ"),
])
def test_read_tensor_by_offsets_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb01.read_tensor_by_offsets(wrong)


# --- the debugging exercise: bin_to_safetensors -------------------------------------------------------------------


def _converter(weights_only=True, drop_head=False):
    from safetensors.torch import save_file

    def bin_to_safetensors(bin_path, out_path):
        state = torch.load(bin_path, map_location="cpu", weights_only=weights_only)
        kept, seen = {}, set()
        for name, tensor in state.items():
            if (drop_head and name == "lm_head.weight") or (not drop_head and tensor.data_ptr() in seen):
                continue
            seen.add(tensor.data_ptr())
            kept[name] = tensor.contiguous()
        save_file(kept, out_path, metadata={"format": "pt"})

    return bin_to_safetensors


def test_bin_to_safetensors_passes_the_fixed_version(capsys):
    nb01.bin_to_safetensors_debugged(_converter())
    assert capsys.readouterr().out.startswith("\u2713 bin_to_safetensors")
    assert not nb01.hostile_code_ran()


def _naive(bin_path, out_path):
    from safetensors.torch import save_file

    save_file(torch.load(bin_path, weights_only=True), out_path)


@pytest.mark.parametrize(("wrong", "symptom"), [
    (_stub, "not written yet"),
    (_converter(weights_only=False, drop_head=True), "other logits"),  # the colleague's version: both bugs
    (_converter(weights_only=False), "ran the Python code"),
    (_converter(drop_head=True), "other logits"),
    (_naive, "share memory"),  # every tensor kept: a tied pair cannot be saved twice
])
def test_bin_to_safetensors_fails_on_the_bugs_with_a_symptom(wrong, symptom):
    with pytest.raises(CheckFailed, match=symptom) as failure:
        nb01.bin_to_safetensors_debugged(wrong)
    assert "weights_only" not in str(failure.value)
