"""course_utils.storage.safetensors_io: the strict header parser, reads by offsets, and what it does with hostile files."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save, save_file

from course_utils.reporting import tables
from course_utils.storage import safetensors_fuzz, safetensors_io
from course_utils.storage.safetensors_io import (
    MAX_HEADER_BYTES,
    SafetensorsFormatError,
    assemble,
    parse_bytes,
)


def _tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "a.f32": torch.randn(5, 3, generator=generator),
        "b.bf16": torch.randn(4, 6, generator=generator).bfloat16(),
        "c.f16": torch.randn(7, generator=generator).half(),
        "d.i64": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "e.bool": torch.tensor([True, False, True]),
        "f.u8": torch.arange(9, dtype=torch.uint8).reshape(3, 3),
        "g.scalar": torch.tensor(2.5),
        "h.empty": torch.zeros(0, 4),
    }


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(-1).view(torch.uint8)


@pytest.fixture()
def model_file(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(_tensors(), path, metadata={"format": "pt", "note": "test"})
    return path


class ReadGuard(io.BytesIO):
    """A file in memory that fails the test if anyone asks for more bytes than are left, and counts reads."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.size, self.bytes_read = len(data), 0

    def _check(self, requested: int) -> None:
        assert requested <= self.size - self.tell(), f"asked for {requested} bytes with {self.size - self.tell()} left"

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size >= 0:
            self._check(size)
        data = super().read(size)
        self.bytes_read += len(data)
        return data

    def readinto(self, buffer) -> int:
        self._check(len(buffer))
        count = super().readinto(buffer)
        self.bytes_read += count
        return count


# --- valid files -----------------------------------------------------------------------------------------------


def test_header_matches_the_safetensors_library(model_file):
    header = safetensors_io.read_header(model_file)
    with safe_open(str(model_file), "pt") as f:
        assert set(header.tensors) == set(f.keys())
        assert header.metadata == f.metadata() == {"format": "pt", "note": "test"}
        for info in header:
            assert list(info.shape) == list(f.get_slice(info.name).get_shape())
    assert header.file_size == model_file.stat().st_size
    assert header.data_start == 8 + header.header_size
    assert [t.start for t in header] == sorted(t.start for t in header)  # file order


def test_every_tensor_reads_bit_for_bit(model_file):
    header = safetensors_io.read_header(model_file)
    with safe_open(str(model_file), "pt") as f:
        for name in header.tensors:
            ours, theirs = safetensors_io.read_tensor(model_file, name), f.get_tensor(name)
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
            assert torch.equal(_bits(ours), _bits(theirs))
    assert safetensors_io.read_all(model_file).keys() == header.tensors.keys()


def test_header_reading_touches_only_8_plus_n_bytes(model_file):
    data = model_file.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    guard = ReadGuard(data)
    safetensors_io.read_header(guard)
    assert guard.bytes_read == 8 + n < len(data)
    with safetensors_io.CountingFile(model_file) as counted:
        header = safetensors_io.read_header(counted)
    assert counted.bytes_read == 8 + header.header_size


def test_read_rows_reads_only_those_rows(model_file):
    header = safetensors_io.read_header(model_file)
    full = safetensors_io.read_tensor(model_file, "a.f32", header)
    with safetensors_io.CountingFile(model_file) as counted:
        rows = safetensors_io.read_rows(counted, "a.f32", 1, 4, header)
    assert torch.equal(rows, full[1:4])
    assert counted.bytes_read == 3 * 3 * 4
    with safe_open(str(model_file), "pt") as f:
        assert torch.equal(f.get_slice("b.bf16")[2:4], safetensors_io.read_rows(model_file, "b.bf16", 2, 4))
    with pytest.raises(IndexError, match="outside"):
        safetensors_io.read_rows(model_file, "a.f32", 3, 9)
    with pytest.raises(ValueError, match="scalar"):
        safetensors_io.read_rows(model_file, "g.scalar", 0, 1)


def test_unknown_tensor_name_says_what_is_there(model_file):
    with pytest.raises(KeyError, match="No tensor 'a.f64'.*similar"):
        safetensors_io.read_tensor(model_file, "a.f64")


def test_a_read_only_file_object_works():
    class ReadOnly:
        def __init__(self, data: bytes) -> None:
            self._inner = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            return self._inner.read(n)

        def seek(self, *args) -> int:
            return self._inner.seek(*args)

        def tell(self) -> int:
            return self._inner.tell()

    data = save(_tensors())
    assert safetensors_io.read_header(ReadOnly(data)).tensors.keys() == parse_bytes(data).tensors.keys()


def test_tables_and_description(model_file):
    header = safetensors_io.read_header(model_file)
    rows = safetensors_io.header_table(header, limit=2)
    assert len(rows) == 2 and set(rows[0]) == {"tensor", "dtype", "shape", "data_offsets", "bytes"}
    assert "8 (header length)" in safetensors_io.describe(header)


def test_shard_table_checks_each_shard_against_the_index(tmp_path):
    tensors = _tensors()
    first, second = {k: tensors[k] for k in ("a.f32", "b.bf16")}, {k: tensors[k] for k in ("c.f16", "d.i64")}
    save_file(first, tmp_path / "model-00001-of-00002.safetensors")
    save_file(second, tmp_path / "model-00002-of-00002.safetensors")
    weight_map = {**{k: "model-00001-of-00002.safetensors" for k in first},
                  **{k: "model-00002-of-00002.safetensors" for k in second}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    rows = safetensors_io.shard_table(tmp_path)
    assert [r["tensors"] for r in rows] == [2, 2]
    weight_map["a.f32"] = "model-00002-of-00002.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    with pytest.raises(SafetensorsFormatError, match="disagree"):
        safetensors_io.shard_table(tmp_path)


def test_benchmark_reports_every_read(model_file, capsys):
    rows = safetensors_io.benchmark_reads(model_file, repeats=2)
    assert [r["read"] for r in rows] == list(safetensors_io.BENCHMARK_READS)
    assert all(r["median ms"] >= 0 for r in rows)
    total, err = len(safetensors_io.BENCHMARK_READS), capsys.readouterr().err  # one step per kind of read
    assert f"timing reads of {model_file.name}: 100%" in err and f"{total}/{total}" in err  # its bar, finished
    safetensors_io.benchmark_reads(model_file, repeats=1, progress=False)
    assert "timing reads" not in capsys.readouterr().err


# --- bad files -------------------------------------------------------------------------------------------------


def _entry(dtype: str = "F32", shape=(2,), offsets=(0, 8)) -> dict:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def _file(header: str, data_bytes: int) -> bytes:
    """A file with exactly this header text (JSON that json.dumps would not write) and a zero data block."""
    return struct.pack("<Q", len(header.encode())) + header.encode() + bytes(data_bytes)


BAD_FILES = [
    ("empty file", b"", "^header length: the file has 0 bytes"),
    ("7 bytes", b"\x00" * 7, "8-byte header length"),
    ("length over 100 MB", struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}", "100,000,000-byte limit"),
    ("length 2**64 - 1", b"\xff" * 8 + b"{}", "limit"),
    ("length past the end", struct.pack("<Q", 50) + b"{}", "only 2 follow"),
    ("invalid UTF-8", struct.pack("<Q", 4) + b'{"\xc3"', "not valid UTF-8"),
    ("invalid JSON", struct.pack("<Q", 5) + b"{'a'}", "not valid JSON"),
    ("empty header", struct.pack("<Q", 0), "not valid JSON"),
    ("header is a string", struct.pack("<Q", 4) + b'"ab"', "^header object: the header must be a JSON object, got a string"),
    ("header is null", struct.pack("<Q", 4) + b"null", "must be a JSON object, got null"),
    ("tensor entry is a list", assemble({"w": [1, 2]}, b""), "expected an object"),
    ("missing data_offsets", assemble({"w": {"dtype": "F32", "shape": [0]}}, b""), "missing data_offsets"),
    ("unknown field", assemble({"w": {**_entry(), "extra": 1}}, b"\0" * 8), "unknown field"),
    ("unknown dtype", assemble({"w": _entry(dtype="F128")}, b"\0" * 8), "unknown dtype 'F128'"),
    ("dtype not a string", assemble({"w": _entry(dtype=32)}, b"\0" * 8), "unknown dtype 32"),
    ("negative dimension", assemble({"w": _entry(shape=(-2,))}, b"\0" * 8), "^shape: .*integers from 0 to 2"),
    ("float dimension", assemble({"w": _entry(shape=(2.0,))}, b"\0" * 8), "^shape: .*got \\[2.0\\]"),
    ("boolean dimension", assemble({"w": _entry(shape=(True, 2))}, b"\0" * 8), "^shape: .*got \\[True, 2\\]"),
    ("shape not a list", assemble({"w": {**_entry(), "shape": 2}}, b"\0" * 8), "shape must be a list"),
    ("three offsets", assemble({"w": _entry(offsets=(0, 4, 8))}, b"\0" * 8), "two integers"),
    ("string offsets", assemble({"w": _entry(offsets=("0", "8"))}, b"\0" * 8), "two integers"),
    ("end before start", assemble({"w": _entry(offsets=(8, 0))}, b"\0" * 8), "^data_offsets: .*must satisfy start <= end"),
    ("offset past the data", assemble({"w": _entry(offsets=(4, 12))}, b"\0" * 8), "run past the data block"),
    ("shape needs more bytes", assemble({"w": _entry(shape=(3,))}, b"\0" * 8), "needs 12 bytes"),
    ("shape needs fewer bytes", assemble({"w": _entry(shape=(1,))}, b"\0" * 8), "needs 4 bytes"),
    ("astronomical shape", assemble({"w": _entry(shape=(2**62, 2**62, 2**62))}, b"\0" * 8),
     "^shape: .*more than 2\\*\\*64 - 1 elements"),
    ("overlap", assemble({"a": _entry(offsets=(0, 8)), "b": _entry(offsets=(4, 12))}, b"\0" * 12), "overlaps"),
    ("gap", assemble({"a": _entry(offsets=(0, 8)), "b": _entry(offsets=(12, 20))}, b"\0" * 20), "belong to no tensor"),
    ("trailing bytes", assemble({"a": _entry()}, b"\0" * 9), "cover only 8"),
    ("metadata not an object", assemble({"__metadata__": ["x"], "a": _entry()}, b"\0" * 8), "JSON object of strings"),
    ("metadata value a number", assemble({"__metadata__": {"step": 3}, "a": _entry()}, b"\0" * 8),
     "'step' is a number"),
    ("metadata value null", assemble({"__metadata__": {"step": None}, "a": _entry()}, b"\0" * 8), "'step' is null"),
    ("duplicate name", assemble([("a", _entry()), ("a", _entry())], b"\0" * 8), "^header object: the tensor name 'a' appears twice; this parser is stricter"),
    ("deep nesting", struct.pack("<Q", 200_000) + b"[" * 100_000 + b"]" * 100_000, "^JSON: .* more than 127 deep"),
    ("NaN", _file('{"a":{"dtype":"F32","shape":[NaN],"data_offsets":[0,8]}}', 8), "^JSON: NaN is not a JSON value"),
    ("-0", _file('{"a":{"dtype":"F32","shape":[-0],"data_offsets":[0,0]}}', 0), "^shape: .*got \\[-0\\]"),
    ("lone surrogate", assemble({"\ud800": _entry()}, b"\0" * 8), "^JSON: .*unpaired surrogate escape \\\\ud800"),
    ("metadata key twice", _file('{"__metadata__":{"k":"1","k":"2"},"a":' + json.dumps(_entry()) + "}", 8),
     "^metadata: the metadata key 'k' appears twice; this parser is stricter"),
    ("huge number", struct.pack("<Q", 5_002) + b"[" + b"9" * 5_000 + b"]", "^JSON: the number 9+\\.\\.\\. is beyond a double's range"),
]


@pytest.mark.parametrize(("data", "message"), [pytest.param(d, m, id=i) for i, d, m in BAD_FILES])
def test_bad_files_raise_a_precise_error(data, message):
    with pytest.raises(SafetensorsFormatError, match=message):
        safetensors_io.read_header(ReadGuard(data))


def test_the_damage_table_catches_every_damage(model_file):
    rows = safetensors_io.damage_table(model_file.read_bytes())
    assert len(rows) >= 15
    assert not [r for r in rows if r["SafetensorsFormatError"] == "accepted (!)"]
    assert tables.records_table(rows).count("\n") == len(rows) + 1


def test_a_hostile_length_allocates_nothing(monkeypatch):
    """Nothing is read or allocated for a header that claims more than the file or the limit holds."""
    allocations = []
    real = bytearray

    class Watched(bytearray):
        def __new__(cls, *args):
            allocations.append(args[0] if args and isinstance(args[0], int) else 0)
            return real.__new__(cls, *args)

    monkeypatch.setattr(safetensors_io, "bytearray", Watched, raising=False)
    for length in (2**63, MAX_HEADER_BYTES + 1, 10_000):
        with pytest.raises(SafetensorsFormatError):
            safetensors_io.read_header(ReadGuard(struct.pack("<Q", length) + b"{}"))
    assert max(allocations, default=0) <= 8


def test_null_metadata_is_no_metadata_as_in_the_library():
    header = parse_bytes(_file('{"__metadata__":null,"a":' + json.dumps(_entry()) + "}", 8))
    assert header.metadata == {} and list(header.tensors) == ["a"]


def test_a_zero_size_tensor_too_wide_for_torch_is_valid_but_not_readable():
    data = assemble({"a": _entry(shape=(0, 2**64 - 1), offsets=(0, 0))}, b"")
    assert parse_bytes(data).tensors["a"].shape == (0, 2**64 - 1)  # the library accepts it too
    with pytest.raises(ValueError, match="above 2\\*\\*63 - 1, the largest a torch tensor can have"):
        safetensors_io.read_tensor(io.BytesIO(data), "a")


def test_a_file_that_shrinks_while_reading_is_reported():
    class Shrinking(io.BytesIO):
        def seek(self, offset, whence=0):
            result = super().seek(offset, whence)
            return 100 if whence == io.SEEK_END else result

    data = save({"w": torch.zeros(4)})
    with pytest.raises(SafetensorsFormatError, match="ended while reading"):
        safetensors_io.read_header(Shrinking(data[:20]))


# --- fuzzing ---------------------------------------------------------------------------------------------------


_SCRATCH = safetensors_fuzz.scratch_folder()  # one file the library reads each example from, removed at exit


def _parse_or_format_error(data: bytes) -> None:
    """Only our error escapes, and the safetensors library agrees (see tests/test_safetensors_differential.py)."""
    try:
        header = safetensors_io.read_header(ReadGuard(data))
    except SafetensorsFormatError:
        pass
    else:  # whatever is accepted must be self-consistent
        assert header.data_start + sum(t.nbytes for t in header) == len(data)
    result = safetensors_fuzz.compare(data, Path(_SCRATCH.name) / "example.safetensors")
    assert result.failure is None, result.failure


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_give_only_our_error(data):
    _parse_or_format_error(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120), st.integers(min_value=0, max_value=2**64 - 1))
def test_random_headers_with_any_length_give_only_our_error(body, length):
    _parse_or_format_error(struct.pack("<Q", length) + body)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
_entries = st.fixed_dictionaries(
    {"dtype": st.sampled_from([*safetensors_io.DTYPE_BITS, "F128", "", "bf16"]) | _json_values,
     "shape": st.lists(st.integers(-2, 6), max_size=3) | _json_values,
     "data_offsets": st.lists(st.integers(-4, 40), min_size=0, max_size=3) | _json_values},
    optional={"extra": _json_values},
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=8), _entries | _json_values, max_size=4),
       st.one_of(st.none(), st.dictionaries(st.text(max_size=4), st.text(max_size=4) | _json_values, max_size=3)),
       st.integers(0, 48))
def test_random_json_headers_give_only_our_error(entries, metadata, data_size):
    header = dict(entries)
    if metadata is not None:
        header["__metadata__"] = metadata
    _parse_or_format_error(assemble(header, b"\0" * data_size))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_valid_files_give_only_our_error(data):
    original = save({"a": torch.ones(3, 2), "b": torch.zeros(5, dtype=torch.bfloat16)}, metadata={"k": "v"})
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(original) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    _parse_or_format_error(bytes(mutated[:cut]) if data.draw(st.booleans()) else bytes(mutated))
