"""The safetensors file format by hand: a strict header parser, reading one tensor (or a few rows) by its offsets.

A safetensors file is three parts::

    [8 bytes: N, little-endian unsigned 64-bit] [N bytes: JSON header] [data block: every tensor's raw bytes]

The header maps each tensor name to ``{"dtype", "shape", "data_offsets": [start, end]}``, offsets counted from
the start of the data block, plus an optional ``"__metadata__"`` object of string to string. :func:`read_header`
reads only the first ``8 + N`` bytes and checks every rule of :data:`RULES`, raising
:class:`SafetensorsFormatError` with a message that starts with the rule's name and says what and where. It never
reads past the end of the file and never allocates more than the file holds, whatever length the file claims.

It rejects every file the ``safetensors`` library rejects (``tests/test_safetensors_differential.py`` compares the
two on a corpus and a fuzzer) and, deliberately, three more kinds, each with a message that says so: a tensor name
or a metadata key written twice (the library keeps the last one), and an unknown field in a tensor entry (the
library ignores it). JSON is read by JSON's own rules (RFC 8259), not by the looser ones of Python's ``json``
module: ``NaN``, ``Infinity``, ``-0`` as an integer, numbers beyond a double's range and unpaired ``\\ud800``
escapes are refused, as the library refuses them.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import math
import os
import re
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Union

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

PathOrFile = Union[str, "os.PathLike[str]", BinaryIO]

HEADER_LENGTH_BYTES = 8
MAX_HEADER_BYTES = 100_000_000  # the same 100 MB limit as the reference implementation
METADATA_KEY = "__metadata__"
TENSOR_FIELDS = ("dtype", "shape", "data_offsets")
U64_MAX = 2**64 - 1  # shapes, offsets and byte counts are unsigned 64-bit numbers in the reference implementation
MAX_JSON_DEPTH = 127  # the library's JSON reader (serde_json) refuses arrays and objects nested deeper
TORCH_MAX_DIM = 2**63 - 1  # a valid file may hold a zero-size tensor with a larger dimension; torch cannot

# Bits per element of every dtype the format defines (sub-byte float types pack several values per byte).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
}

# Every rule a file must follow; each error message starts with the name of the rule it broke.
RULES: dict[str, str] = {
    "header length": "the file starts with N, 8 bytes, unsigned little-endian; N <= 100,000,000 and the file holds "
                     "8 + N bytes",
    "UTF-8": "the N header bytes are valid UTF-8",
    "JSON": "the header is one JSON value by JSON's own rules (RFC 8259: no NaN or Infinity, no comments or trailing "
            "commas, no control characters or unpaired surrogate escapes in strings, nothing after the value but "
            "whitespace), numbers within a double's range, nesting at most 127 deep",
    "header object": "the header is a JSON object; __metadata__ appears at most once; every tensor name appears "
                     "once (stricter than the library, which keeps the last)",
    "metadata": "__metadata__ is null or an object of string keys to string values, every key once (stricter than "
                "the library, which keeps the last)",
    "tensor entry": "every other key is a tensor name whose value is an object with the fields dtype, shape and "
                    "data_offsets, each once, and no other field (stricter than the library, which ignores others)",
    "dtype": "dtype is one of " + ", ".join(DTYPE_BITS),
    "shape": "shape is a list of integers from 0 to 2**64 - 1; multiplied out in order, the element count and its "
             "bits stay below 2**64, and the bits fill whole bytes",
    "data_offsets": "data_offsets is two integers [start, end] with 0 <= start <= end <= 2**64 - 1",
    "byte count": "end - start is exactly the bytes the dtype and shape need",
    "layout": "in order of their offsets the tensors cover the data block exactly: each starts where the previous "
              "one ended (the first at 0) and the last ends where the file ends",
}
STRICTER = "this parser is stricter than the safetensors library, which {}"


class SafetensorsFormatError(ValueError):
    """The bytes are not a valid safetensors file; ``rule`` names the rule of :data:`RULES` that they break."""

    def __init__(self, message: str, rule: str = "") -> None:
        super().__init__(message)
        self.rule = rule


@dataclass(frozen=True)
class TensorInfo:
    """One header entry: a tensor's dtype, shape and byte range inside the data block."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsHeader:
    """A validated header: its length N, the metadata, and the tensors in the order of their bytes."""

    header_size: int
    metadata: dict[str, str]
    tensors: dict[str, TensorInfo]
    file_size: int
    raw: bytes = field(repr=False, default=b"")

    @property
    def data_start(self) -> int:
        """Where the data block begins in the file: after the 8-byte length and the N-byte header."""
        return HEADER_LENGTH_BYTES + self.header_size

    @property
    def data_size(self) -> int:
        return self.file_size - self.data_start

    def file_range(self, name: str) -> tuple[int, int]:
        """``(first, last + 1)`` byte positions of tensor ``name`` in the file."""
        info = self.tensor(name)
        return self.data_start + info.start, self.data_start + info.end

    def tensor(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self.tensors), n=3)
            raise KeyError(f"No tensor {name!r} in this file ({len(self.tensors)} tensors"
                           + (f"; similar: {close}" if close else "") + ")") from None

    def __iter__(self) -> Iterator[TensorInfo]:
        return iter(self.tensors.values())

    def __len__(self) -> int:
        return len(self.tensors)


# ---------------------------------------------------------------------------------------------------------------
# Parsing and validation


# ---------------------------------------------------------------------------------------------------------------
# Parsing and validation


def _fail(rule: str, detail: str) -> SafetensorsFormatError:
    return SafetensorsFormatError(f"{rule}: {detail}", rule)


class _JsonObject(list):
    """A JSON object as its (key, value) pairs in file order, duplicates kept, so each rule can judge them."""


class _NotAnInteger(str):
    """A JSON number that the reference implementation does not read as an integer (``-0``, or a huge one)."""

    def __repr__(self) -> str:
        return str(self)


def _json_int(text: str) -> int | _NotAnInteger:
    # serde_json reads -0 as a float, and integers beyond 64 bits as floats: neither is a valid shape or offset.
    if text == "-0" or len(text) > 24:
        _json_float(text)  # out of a double's range is a JSON error, as in the library
        return _NotAnInteger(text)
    return int(text)


def _json_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _fail("JSON", f"the number {text[:40]}{'...' if len(text) > 40 else ''} is beyond a double's range")
    return value


def _json_constant(name: str) -> None:
    raise _fail("JSON", f"{name} is not a JSON value (Python's json module accepts it; JSON and the safetensors "
                        "library do not)")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if isinstance(value, _JsonObject):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str) and not isinstance(value, _NotAnInteger):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _check_text(text: str, where: str) -> str:
    found = _SURROGATE.search(text)
    if found:
        raise _fail("JSON", f"{where} holds an unpaired surrogate escape \\u{ord(found.group()):04x} (not valid "
                            "Unicode, so not valid JSON)")
    return text


def _check_any_json(value: Any, where: str) -> None:
    """JSON's rules inside a value the format does not use (an unknown field): nesting depth and strings."""
    stack = [(value, 3)]  # the header object and the tensor entry are the first two levels
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list):
            if depth > MAX_JSON_DEPTH:
                raise _fail("JSON", f"{where} nests arrays or objects more than {MAX_JSON_DEPTH} deep")
            pairs = item if isinstance(item, _JsonObject) else [("", element) for element in item]
            for key, element in pairs:
                _check_text(key, where)
                stack.append((element, depth + 1))
        elif isinstance(item, str):
            _check_text(item, where)


def _parse_json(header: bytes) -> Any:
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError as exc:
        found = bytes(header[exc.start:exc.start + 4])
        raise _fail("UTF-8", f"the header is not valid UTF-8 (byte {exc.start}: {found!r})") from None
    try:
        return json.loads(text, object_pairs_hook=_JsonObject, parse_int=_json_int, parse_float=_json_float,
                          parse_constant=_json_constant)
    except SafetensorsFormatError:
        raise
    except json.JSONDecodeError as exc:
        raise _fail("JSON", f"the header is not valid JSON: {exc.msg} at character {exc.pos}") from None
    except RecursionError:  # e.g. 100 000 nested brackets
        raise _fail("JSON", f"the header nests arrays or objects more than {MAX_JSON_DEPTH} deep") from None


def _is_u64(value: Any) -> bool:
    return type(value) is int and 0 <= value <= U64_MAX


def _check_metadata(value: Any, stricter: list[SafetensorsFormatError]) -> dict[str, str]:
    if value is None:  # the library reads null as "no metadata"
        return {}
    if not isinstance(value, _JsonObject):
        raise _fail("metadata", f"{METADATA_KEY!r} must be a JSON object of strings, got {_json_type(value)}")
    metadata: dict[str, str] = {}
    for key, item in value:
        _check_text(key, f"metadata key {key!r}")
        if not isinstance(item, str) or isinstance(item, _NotAnInteger):
            raise _fail("metadata", f"{METADATA_KEY!r} values must be strings; {key!r} is {_json_type(item)}")
        _check_text(item, f"metadata value of {key!r}")
        if key in metadata and not stricter:
            stricter.append(_fail("metadata", f"the metadata key {key!r} appears twice; "
                                  + STRICTER.format("keeps the last value")))
        metadata[key] = item
    return metadata


def _check_entry(name: str, entry: Any, stricter: list[SafetensorsFormatError]) -> tuple[str, list[int], int, int]:
    """The types of one tensor entry (every rule the library checks while reading the JSON): dtype, shape, offsets."""
    where = f"tensor {name!r}"
    if not isinstance(entry, _JsonObject):
        raise _fail("tensor entry", f"{where}: expected an object with {', '.join(TENSOR_FIELDS)}, "
                                    f"got {_json_type(entry)}")
    fields: dict[str, Any] = {}
    unknown = []
    for key, value in entry:
        if key not in TENSOR_FIELDS:
            _check_any_json(value, f"{where}, field {key!r}")
            _check_text(key, f"{where}, field name")
            unknown.append(key)
        elif key in fields:
            raise _fail("tensor entry", f"{where}: the field {key!r} appears twice")
        fields[key] = value
    missing = [key for key in TENSOR_FIELDS if key not in fields]
    if missing:
        raise _fail("tensor entry", f"{where}: missing {', '.join(missing)}")
    dtype, shape, offsets = (fields[key] for key in TENSOR_FIELDS)
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise _fail("dtype", f"{where}: unknown dtype {dtype!r:.40}; known: {', '.join(DTYPE_BITS)}")
    if not isinstance(shape, list) or isinstance(shape, _JsonObject) or not all(_is_u64(d) for d in shape):
        raise _fail("shape", f"{where}: shape must be a list of integers from 0 to 2**64 - 1, got {shape!r:.80}")
    if not (isinstance(offsets, list) and not isinstance(offsets, _JsonObject) and len(offsets) == 2
            and all(_is_u64(o) for o in offsets)):
        raise _fail("data_offsets", f"{where}: data_offsets must be two integers [start, end] from 0 to 2**64 - 1, "
                                    f"got {offsets!r:.80}")
    if unknown and not stricter:
        stricter.append(_fail("tensor entry", f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; only "
                              f"{', '.join(TENSOR_FIELDS)} belong there; " + STRICTER.format("ignores them")))
    return dtype, shape, offsets[0], offsets[1]


def _byte_count(where: str, dtype: str, shape: list[int]) -> int:
    """Bytes a tensor needs, computed as the library does: in order, failing once a product passes 64 bits."""
    count = 1
    for dim in shape:
        count *= dim  # both factors are below 2**64, so this stays small
        if count > U64_MAX:
            raise _fail("shape", f"{where}: shape {shape} has more than 2**64 - 1 elements (multiplied out in order)")
    bits = count * DTYPE_BITS[dtype]
    if bits > U64_MAX:
        raise _fail("shape", f"{where}: shape {shape} of {dtype} needs more than 2**64 - 1 bits")
    if bits % 8:
        raise _fail("shape", f"{where}: {count} elements of {dtype} are {bits} bits, which do not fill whole bytes")
    return bits // 8


def _check_tensor(name: str, dtype: str, shape: list[int], start: int, end: int) -> TensorInfo:
    where = f"tensor {name!r}"
    if start > end:
        raise _fail("data_offsets", f"{where}: data_offsets [{start}, {end}] must satisfy start <= end")
    need = _byte_count(where, dtype, shape)
    if need != end - start:
        raise _fail("byte count", f"{where}: shape {shape} of {dtype} needs {need} bytes, but data_offsets "
                                  f"[{start}, {end}] hold {end - start}")
    return TensorInfo(name, dtype, tuple(shape), start, end)


def _check_layout(tensors: list[TensorInfo], data_size: int) -> None:
    """Tensors must tile the data block exactly: no overlap, no gap, nothing left over at the end."""
    position, previous = 0, None
    for info in tensors:
        if info.end > data_size:
            raise _fail("layout", f"tensor {info.name!r}: data_offsets [{info.start}, {info.end}] run past the data "
                                  f"block, which has {data_size} bytes")
        if info.start < position:
            raise _fail("layout", f"tensor {info.name!r} (bytes {info.start}-{info.end}) overlaps tensor "
                                  f"{previous!r} (which ends at {position})")
        if info.start > position:
            raise _fail("layout", f"bytes {position}-{info.start} of the data block belong to no tensor (a gap "
                                  f"before {info.name!r}); the tensors must cover the data block exactly")
        position, previous = info.end, info.name
    if position != data_size:
        raise _fail("layout", f"the data block has {data_size} bytes but the tensors cover only {position}: "
                              "the file has trailing bytes or lost its end")


def parse_header_bytes(header: bytes, data_size: int) -> tuple[dict[str, str], dict[str, TensorInfo]]:
    """Validate the N header bytes against a data block of ``data_size`` bytes: ``(metadata, tensors)``.

    The rules the library enforces come first; the deliberately stricter ones (a name or key written twice, an
    unknown field) are raised last, so their message, which says it is stricter, is only seen on a file that the
    library would accept.
    """
    parsed = _parse_json(header)
    if not isinstance(parsed, _JsonObject):
        raise _fail("header object", f"the header must be a JSON object, got {_json_type(parsed)}")
    stricter: list[SafetensorsFormatError] = []
    metadata: dict[str, str] | None = None
    entries: dict[str, tuple[str, list[int], int, int]] = {}
    for name, value in parsed:
        _check_text(name, f"the key {name!r}")
        if name == METADATA_KEY:
            if metadata is not None:
                raise _fail("header object", f"{METADATA_KEY!r} appears twice")
            metadata = _check_metadata(value, stricter)
            continue
        entry = _check_entry(name, value, stricter)
        if name in entries and not stricter:
            stricter.append(_fail("header object", f"the tensor name {name!r} appears twice; "
                                  + STRICTER.format("keeps the last entry")))
        entries[name] = entry  # the last one counts, as in the library
    tensors = [_check_tensor(name, *entry) for name, entry in entries.items()]
    tensors.sort(key=lambda t: (t.start, t.end))
    _check_layout(tensors, data_size)
    if stricter:
        raise stricter[0]
    return metadata or {}, {t.name: t for t in tensors}


def _file_size(f: IO[bytes]) -> int:
    position = f.tell()
    size = f.seek(0, io.SEEK_END)
    f.seek(position)
    return size


def _read_exactly(f: IO[bytes], count: int, what: str, rule: str = "layout") -> bytearray:
    """Read ``count`` bytes (already checked against the file size) into a new buffer, looping over short reads."""
    buffer = bytearray(count)
    view, got = memoryview(buffer), 0
    readinto = getattr(f, "readinto", None)
    while got < count:
        if readinto is not None:
            n = readinto(view[got:])
        else:  # a file-like object with read() only
            chunk = f.read(count - got)
            n = len(chunk)
            view[got:got + n] = chunk
        if not n:
            raise _fail(rule, f"the file ended while reading {what}: {got} of {count} bytes were there")
        got += n
    return buffer


def _header_from_file(f: IO[bytes]) -> SafetensorsHeader:
    file_size = _file_size(f)
    f.seek(0)
    if file_size < HEADER_LENGTH_BYTES:
        raise _fail("header length", f"the file has {file_size} bytes; a safetensors file starts with an 8-byte "
                                     "header length")
    (header_size,) = struct.unpack("<Q", _read_exactly(f, HEADER_LENGTH_BYTES, "the header length", "header length"))
    if header_size > MAX_HEADER_BYTES:
        raise _fail("header length", f"the header length says {header_size:,} bytes, more than the "
                                     f"{MAX_HEADER_BYTES:,}-byte limit: this is not a safetensors file, or its first "
                                     "8 bytes are damaged")
    if HEADER_LENGTH_BYTES + header_size > file_size:
        raise _fail("header length", f"the header length says {header_size:,} bytes, but only "
                                     f"{file_size - HEADER_LENGTH_BYTES:,} follow the first 8: the file is truncated "
                                     "or not a safetensors file")
    raw = _read_exactly(f, header_size, "the JSON header", "header length")
    data_size = file_size - HEADER_LENGTH_BYTES - header_size
    metadata, tensors = parse_header_bytes(raw, data_size)
    return SafetensorsHeader(header_size, metadata, tensors, file_size, bytes(raw))


def read_header(source: PathOrFile) -> SafetensorsHeader:
    """Read and validate the header of a safetensors file (a path or a binary file object), touching 8 + N bytes."""
    if hasattr(source, "read"):
        return _header_from_file(source)  # type: ignore[arg-type]
    with open(source, "rb") as f:  # type: ignore[arg-type]
        return _header_from_file(f)


def parse_bytes(data: bytes) -> SafetensorsHeader:
    """:func:`read_header` of a whole file held in memory."""
    return _header_from_file(io.BytesIO(data))


# ---------------------------------------------------------------------------------------------------------------
# Reading tensors by their offsets


def _torch_dtype(dtype: str) -> torch.dtype:
    import torch

    names = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16", "F16": "float16",
             "BF16": "bfloat16", "I32": "int32", "U32": "uint32", "F32": "float32", "I64": "int64",
             "U64": "uint64", "F64": "float64", "C64": "complex64", "F8_E5M2": "float8_e5m2",
             "F8_E4M3": "float8_e4m3fn", "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz",
             "F8_E8M0": "float8_e8m0fnu"}
    found = getattr(torch, names.get(dtype, ""), None)
    if found is None:
        raise NotImplementedError(f"reading {dtype} tensors into torch is not supported by this helper "
                                  f"(torch {torch.__version__}); use safetensors.safe_open")
    return found


def tensor_from_bytes(raw: bytes | bytearray, dtype: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A torch tensor over little-endian bytes (no copy when ``raw`` is a bytearray)."""
    import torch

    target = _torch_dtype(dtype)
    if any(dim > TORCH_MAX_DIM for dim in shape):
        raise ValueError(f"shape {list(shape)} has a dimension above 2**63 - 1, the largest a torch tensor can have: "
                         "the file is valid (the tensor holds no bytes), but this tensor cannot be read into torch")
    if len(raw) != DTYPE_BITS[dtype] // 8 * math.prod(shape):
        raise ValueError(f"{len(raw)} bytes cannot hold a {dtype} tensor of shape {list(shape)}")
    if sys.byteorder != "little":
        raise NotImplementedError("safetensors stores little-endian bytes; this helper reads them on little-endian "
                                  "machines only (every current x86 and ARM machine is one)")
    if not raw:
        return torch.empty(shape, dtype=target)
    buffer = raw if isinstance(raw, bytearray) else bytearray(raw)
    return torch.frombuffer(buffer, dtype=target).reshape(shape)


@contextlib.contextmanager
def _opened(source: PathOrFile) -> Iterator[IO[bytes]]:
    if hasattr(source, "read"):
        yield source  # type: ignore[misc]
    else:
        with open(source, "rb") as f:  # type: ignore[arg-type]
            yield f


def read_tensor(source: PathOrFile, name: str, header: SafetensorsHeader | None = None) -> torch.Tensor:
    """Read one tensor: seek to 8 + N + start, read end - start bytes, reinterpret them with the dtype and shape."""
    with _opened(source) as f:
        header = header or _header_from_file(f)
        info = header.tensor(name)
        f.seek(header.data_start + info.start)
        raw = _read_exactly(f, info.nbytes, f"tensor {name!r}")
    return tensor_from_bytes(raw, info.dtype, info.shape)


def read_rows(source: PathOrFile, name: str, start: int, stop: int,
              header: SafetensorsHeader | None = None) -> torch.Tensor:
    """Lazily read rows ``start:stop`` of a tensor's first dimension: only those bytes leave the disk."""
    with _opened(source) as f:
        header = header or _header_from_file(f)
        info = header.tensor(name)
        if not info.shape:
            raise ValueError(f"tensor {name!r} is a scalar; it has no rows")
        if not 0 <= start <= stop <= info.shape[0]:
            raise IndexError(f"rows {start}:{stop} are outside tensor {name!r} with {info.shape[0]} rows")
        if DTYPE_BITS[info.dtype] % 8:
            raise NotImplementedError(f"row reads of sub-byte {info.dtype} tensors are not supported")
        row_bytes = DTYPE_BITS[info.dtype] // 8 * math.prod(info.shape[1:])
        f.seek(header.data_start + info.start + start * row_bytes)
        raw = _read_exactly(f, (stop - start) * row_bytes, f"rows {start}:{stop} of {name!r}")
    return tensor_from_bytes(raw, info.dtype, (stop - start, *info.shape[1:]))


class CountingFile(io.RawIOBase):
    """A read-only binary file that counts the bytes read through it (seeks are free, reads are counted)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.bytes_read = 0
        self.reads = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._file.readinto(buffer)
        self.bytes_read += count or 0
        self.reads += 1
        return count or 0

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()
        super().close()


def header_table(header: SafetensorsHeader, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows for a table of the header: name, dtype, shape, data_offsets, bytes (in file order)."""
    rows = [{"tensor": t.name, "dtype": t.dtype, "shape": str(list(t.shape)),
             "data_offsets": f"[{t.start}, {t.end}]", "bytes": t.nbytes} for t in header]
    return rows if limit is None else rows[:limit]


def describe(header: SafetensorsHeader) -> str:
    """A short summary: sizes of the three parts of the file and the dtypes present."""
    dtypes = sorted({t.dtype for t in header})
    return (f"file {header.file_size:,} bytes = 8 (header length) + {header.header_size:,} (JSON header) + "
            f"{header.data_size:,} (data); {len(header)} tensors, dtype(s) {', '.join(dtypes)}; "
            f"metadata {header.metadata}")


def assemble(entries: list[tuple[str, Any]] | Any, data: bytes) -> bytes:
    """Build a file from header entries (a list of (key, value) pairs keeps duplicates and order) and a data block."""
    if isinstance(entries, list) and all(isinstance(e, tuple) and len(e) == 2 for e in entries):
        text = "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in entries) + "}"
    else:
        text = json.dumps(entries)
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _with_text(header: str, data: bytes) -> bytes:
    raw = header.encode()
    return struct.pack("<Q", len(raw)) + raw + data


def damaged_variants(data: bytes) -> list[tuple[str, bytes]]:
    """Ways a valid file (with at least two tensors) can be broken, each as (what was done, the bytes)."""
    header = parse_bytes(data)
    block = data[header.data_start:]
    entries = [(METADATA_KEY, header.metadata)] if header.metadata else []
    entries += [(t.name, {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [t.start, t.end]})
                for t in header]
    first = 1 if header.metadata else 0

    def edit(index: int, **changes: Any) -> bytes:
        changed = [(k, dict(v)) for k, v in entries]
        changed[index][1].update(changes)
        return assemble(changed, block)

    a, b, last = entries[first][1], entries[first + 1][1], entries[-1][1]
    tensors_text = ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in entries[first:])
    raw = header.raw
    brace = raw.rindex(b"}")
    return [
        ("only the first 5 bytes", data[:5]),
        ("header length set to 2**40", struct.pack("<Q", 2**40) + data[8:]),
        ("header length longer than the file", struct.pack("<Q", len(data)) + data[8:]),
        ("last 100 bytes cut off", data[:-100]),
        ("extra bytes appended", data + b"\0" * 16),
        ("a 0xFF byte in the header", data[:9] + b"\xff" + data[10:]),
        ("closing brace removed", data[:8 + brace] + b" " + data[9 + brace:]),
        ("header is a JSON list", assemble([v for _, v in entries], b"")),
        ("unknown dtype F12", edit(first, dtype="F12")),
        ("shape one row too long", edit(first, shape=[a["shape"][0] + 1, *a["shape"][1:]])),
        ("offsets overlap the previous tensor",
         edit(first + 1, data_offsets=[b["data_offsets"][0] - 4, b["data_offsets"][1] - 4])),
        ("offsets past the end of the data",
         edit(len(entries) - 1, data_offsets=[last["data_offsets"][0] + 8, last["data_offsets"][1] + 8])),
        ("negative offset", edit(first, data_offsets=[-4, a["data_offsets"][1]])),
        ("metadata value is a number", assemble([(METADATA_KEY, {"format": 1}), *entries[first:]], block)),
        ("tensor name used twice", assemble([*entries, (entries[first][0], a)], block)),
        ("metadata key used twice", _with_text(f'{{"{METADATA_KEY}":{{"k":"1","k":"2"}},' + tensors_text + "}", block)),
        ("NaN as a dimension", _with_text(raw.decode().replace('"shape":[', '"shape":[NaN,', 1), block)),
        ("10 000 nested brackets", struct.pack("<Q", 20_000) + b"[" * 10_000 + b"]" * 10_000),
    ]


def damage_table(data: bytes) -> list[dict[str, str]]:
    """What :func:`read_header` says about each of :func:`damaged_variants`."""
    rows = []
    for what, broken in damaged_variants(data):
        try:
            parse_bytes(broken)
            verdict = "accepted (!)"
        except SafetensorsFormatError as exc:
            verdict = str(exc)
        rows.append({"damage": what, "SafetensorsFormatError": verdict})
    return rows


def shard_table(folder: str | os.PathLike[str], index_name: str = "model.safetensors.index.json") -> list[dict[str, Any]]:
    """One row per shard of a sharded checkpoint: tensors (from the index), bytes and first/last tensor (from the
    shard's own header, read with :func:`read_header`)."""
    folder = Path(folder)
    index = json.loads((folder / index_name).read_text())
    by_shard: dict[str, list[str]] = {}
    for tensor, shard in index["weight_map"].items():
        by_shard.setdefault(shard, []).append(tensor)
    rows = []
    for shard, names in sorted(by_shard.items()):
        header = read_header(folder / shard)
        if set(header.tensors) != set(names):
            raise SafetensorsFormatError(f"{shard}: its header and the index disagree about which tensors it holds")
        order = list(header.tensors)
        rows.append({"shard": shard, "tensors": len(names), "file bytes": header.file_size,
                     "first tensor": order[0], "last tensor": order[-1]})
    return rows


def read_all(source: PathOrFile) -> dict[str, torch.Tensor]:
    """Every tensor, every byte read into memory (no memory mapping): what a full load really costs."""
    with _opened(source) as f:
        header = _header_from_file(f)
        return {t.name: read_tensor(f, t.name, header) for t in header}


BENCHMARK_READS = ("header only (read_header)", "header only (safe_open + keys)", "largest tensor (read_tensor)",
                   "every byte (read_all)", "load_file (memory-mapped)")


def benchmark_reads(path: str | os.PathLike[str], repeats: int = 20, *, progress: bool = True) -> list[dict[str, Any]]:
    """Median milliseconds of reading the header only, one tensor, and every tensor, ours and the library's.

    ``load_file`` memory-maps the file: it returns at once and the bytes are read when first touched, so its time
    is not a full read; ``read_all`` reads every byte. With ``progress``, a bar counts the kinds of read timed
    (it moves between the timings, never inside one).
    """
    from safetensors import safe_open
    from safetensors.torch import load_file
    from tqdm.auto import tqdm

    from course_utils.reporting import timing

    header = read_header(path)
    largest = max(header, key=lambda t: t.nbytes).name

    def library_header() -> None:
        with safe_open(str(path), framework="pt") as f:
            list(f.keys())

    runs = [lambda: read_header(path), library_header, lambda: read_tensor(path, largest, header),
            lambda: read_all(path), lambda: load_file(str(path))]
    rows = []
    with tqdm(total=len(runs), desc=f"timing reads of {Path(path).name}", unit="read", disable=not progress) as bar:
        for label, run in zip(BENCHMARK_READS, runs):  # the timer's warm-ups fill the page cache and the imports
            rows.append({"read": label, "median ms": round(1000 * timing.median_seconds(run, repeats), 3)})
            bar.update()
    return rows
