"""Does :mod:`course_utils.storage.safetensors_io` agree with the ``safetensors`` library? Corpus, fuzzer and verdicts.

:func:`compare` gives one input to ``safetensors.safe_open`` and to :func:`safetensors_io.parse_bytes` and names
what is wrong, if anything:

* the library rejects the file: the parser must raise :class:`SafetensorsFormatError` naming one of
  :data:`safetensors_io.RULES`, and must not claim to be stricter than the library;
* the library accepts it: the parser must find the same tensor names, dtypes, shapes, metadata and bytes, or refuse
  with a message that says it is deliberately stricter (a repeated name or key, an unknown field);
* whatever the file: no other exception, no input that takes longer than :data:`TIME_LIMIT` seconds, and no Python
  allocation beyond :data:`MEMORY_FACTOR` times the input's size (a forged length must not become an allocation).

The inputs: :func:`valid_corpus` (files the library writes, every dtype, scalars, zero-size tensors, metadata, odd
names), :func:`malformed_corpus` (each rule broken in several ways, with the rule the parser must name),
:func:`stricter_corpus` (files the library accepts and the parser refuses on purpose), and :func:`fuzz`, a seeded
mutation fuzzer over the valid files. ``scripts/fuzz_safetensors.py`` runs it by hand for longer and keeps every
failing input in :data:`REGRESSIONS`, which the tests replay.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import os
import random
import re
import signal
import struct
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from course_utils.ground import paths
from course_utils.storage.safetensors_io import (
    DTYPE_BITS,
    MAX_HEADER_BYTES,
    METADATA_KEY,
    RULES,
    TORCH_MAX_DIM,
    U64_MAX,
    SafetensorsFormatError,
    assemble,
    parse_bytes,
    read_tensor,
)

REGRESSIONS = paths.REPO_ROOT / "tests" / "data" / "safetensors" / "regressions"
TIME_LIMIT = 2.0  # seconds one input may take (all of them are small)
HANG_LIMIT = 20.0  # seconds after which the parser is stopped: it hangs
MEMORY_FACTOR = 64  # Python allocations while parsing, at most this many times the input's size ...
MEMORY_SLACK = 1 << 20  # ... plus this
STRICTER_WORDS = "stricter than the safetensors library"
_COMPARE_BYTES_UP_TO = 1 << 20  # tensors are compared byte for byte in accepted files up to this size


@dataclass(frozen=True)
class Reading:
    """What one reader made of an input: accepted or not, the error message, and what it found."""

    accepted: bool
    message: str = ""
    tensors: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    rule: str = ""


@dataclass(frozen=True)
class Failure:
    """An input on which the parser and the library disagree, or on which the parser misbehaved."""

    problem: str
    data: bytes = field(repr=False)
    library: str = ""
    parser: str = ""


def library_reading(data: bytes, path: Path) -> Reading:
    """``safe_open`` of ``data`` (written to ``path``): names, dtypes, shapes and metadata, or its error."""
    from safetensors import safe_open

    path.write_bytes(data)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors, names = {}, f.keys()
            for name in names:
                part = f.get_slice(name)
                tensors[name] = (part.get_dtype(), tuple(part.get_shape()))
            return Reading(True, tensors=tensors, metadata=dict(f.metadata() or {}))
    except BaseException as exc:  # noqa: BLE001 - a Rust panic arrives as a BaseException; it is a rejection too
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return Reading(False, f"{type(exc).__name__}: {exc}")


def parser_reading(data: bytes) -> tuple[Reading, str]:
    """:func:`parse_bytes` of ``data``, and what went wrong beyond a documented rejection ("" when nothing did)."""
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]  # the peak counts everything alive, so measure from here
    start = time.perf_counter()
    try:
        with _deadline(HANG_LIMIT):
            header = parse_bytes(data)
        reading = Reading(True, tensors={t.name: (t.dtype, t.shape) for t in header}, metadata=header.metadata)
    except SafetensorsFormatError as exc:
        reading = Reading(False, str(exc), rule=exc.rule)
    except _Hang:
        return Reading(False, "stopped"), f"had not finished after {HANG_LIMIT:g} s: it hangs"
    except BaseException as exc:  # noqa: BLE001 - exactly what must never happen
        if isinstance(exc, KeyboardInterrupt):
            raise
        return Reading(False, f"{type(exc).__name__}: {exc}"), f"raised {type(exc).__name__}, not SafetensorsFormatError"
    finally:
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] - before
        if not tracing:
            tracemalloc.stop()
    if seconds > TIME_LIMIT:
        return reading, f"took {seconds:.1f} s (limit {TIME_LIMIT:g} s)"
    if peak > MEMORY_FACTOR * len(data) + MEMORY_SLACK:
        return reading, f"allocated {peak:,} bytes for a {len(data):,}-byte input"
    if not reading.accepted and reading.rule not in RULES:
        return reading, f"the error names no rule of RULES (rule {reading.rule!r})"
    if not reading.accepted and not reading.message.startswith(f"{reading.rule}: "):
        return reading, "the message does not start with the rule's name"
    return reading, ""


class _Hang(Exception):
    """The parser ran past :data:`HANG_LIMIT` on one input."""


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Interrupt the block after ``seconds`` with :class:`_Hang` (where a timer signal is available: POSIX, main
    thread); elsewhere the block runs to its end and only :data:`TIME_LIMIT` judges it."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise _Hang

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _same_bytes(names: list[str], path: Path) -> str:
    """The first tensor whose bytes differ between ``read_tensor`` and ``safe_open``'s ``get_tensor`` ("" if none)."""
    import torch
    from safetensors import safe_open

    data = path.read_bytes()
    header, source = parse_bytes(data), io.BytesIO(data)
    with safe_open(str(path), framework="pt") as f:
        for name in names:
            if any(dim > TORCH_MAX_DIM for dim in header.tensors[name].shape):
                continue  # neither reader can make this zero-size tensor in torch (both say so)
            try:
                ours = read_tensor(source, name, header)
            except NotImplementedError:  # a dtype this helper does not read into torch (F4, F6)
                continue
            theirs = f.get_tensor(name)
            if ours.dtype != theirs.dtype or ours.shape != theirs.shape:
                return f"{name}: {ours.dtype} {tuple(ours.shape)} here, {theirs.dtype} {tuple(theirs.shape)} there"
            if ours.numel() and not torch.equal(ours.reshape(-1).view(torch.uint8), theirs.reshape(-1).view(torch.uint8)):
                return f"{name}: the bytes differ"
    return ""


@dataclass(frozen=True)
class Comparison:
    """The parser's and the library's readings of one input, and their disagreement (None when they agree)."""

    parser: Reading
    library: Reading
    failure: Failure | None

    @property
    def stricter(self) -> bool:
        """The parser refused the input on purpose, with a message that says it is stricter than the library."""
        return STRICTER_WORDS in self.parser.message


def compare(data: bytes, path: Path) -> Comparison:
    """Read ``data`` with the parser and with the library (``path`` is a scratch file) and judge the two."""
    ours, misbehaved = parser_reading(data)
    theirs = library_reading(data, path)
    return Comparison(ours, theirs, _judge(data, path, ours, theirs, misbehaved))


def _judge(data: bytes, path: Path, ours: Reading, theirs: Reading, misbehaved: str) -> Failure | None:
    if misbehaved:
        return Failure(misbehaved, data, theirs.message, ours.message)
    stricter = STRICTER_WORDS in ours.message
    if not theirs.accepted:
        if ours.accepted:
            return Failure("accepted a file the library rejects", data, theirs.message)
        if stricter:
            return Failure("claims to be stricter than the library, which rejects the file too", data,
                           theirs.message, ours.message)
        return None
    if not ours.accepted:
        return None if stricter else Failure("rejected a file the library accepts", data, "", ours.message)
    if ours.tensors != theirs.tensors or ours.metadata != theirs.metadata:
        return Failure("read the header differently", data, repr((theirs.tensors, theirs.metadata))[:300],
                       repr((ours.tensors, ours.metadata))[:300])
    if len(data) <= _COMPARE_BYTES_UP_TO:
        differ = _same_bytes(names=list(ours.tensors), path=path)
        if differ:
            return Failure(f"read a tensor differently: {differ}", data)
    return None


# ---------------------------------------------------------------------------------------------------------------
# The corpus


def torch_dtypes() -> dict[str, Any]:
    """Every torch dtype the library saves, by the format's dtype name."""
    import torch

    names = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3fn",
             "F8_E8M0": "float8_e8m0fnu", "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz",
             "F4": "float4_e2m1fn_x2", "I16": "int16", "U16": "uint16", "F16": "float16", "BF16": "bfloat16",
             "I32": "int32", "U32": "uint32", "F32": "float32", "C64": "complex64", "F64": "float64",
             "I64": "int64", "U64": "uint64"}
    return {name: getattr(torch, attr) for name, attr in names.items() if hasattr(torch, attr)}


def _random_tensor(dtype: Any, shape: tuple[int, ...], seed: int) -> Any:
    """A tensor of ``dtype`` whose bytes are random: every bit pattern (NaNs included) may appear."""
    import torch

    itemsize = torch.empty(0, dtype=dtype).element_size()
    generator = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (math.prod(shape) * itemsize,), dtype=torch.uint8, generator=generator)
    if dtype == torch.bool:
        return (raw % 2).bool().reshape(shape)
    return raw.view(dtype).reshape(shape)


def _entry(dtype: str, shape: list[int], start: int) -> dict[str, Any]:
    size = math.prod(shape) * DTYPE_BITS[dtype] // 8
    return {"dtype": dtype, "shape": shape, "data_offsets": [start, start + size]}


def valid_corpus() -> list[tuple[str, bytes]]:
    """Valid files, most written by the library itself: (what it is, the bytes)."""
    import torch
    from safetensors.torch import save

    dtypes = torch_dtypes()
    corpus = [("every dtype in one file", save({name: _random_tensor(d, (2, 4), i)
                                               for i, (name, d) in enumerate(dtypes.items())}))]
    corpus += [(f"{name} alone", save({"w": _random_tensor(d, (3, 2), 7)})) for name, d in dtypes.items()]
    corpus += [(f"{name} scalar", save({"s": _random_tensor(d, (), 3)})) for name, d in dtypes.items()
               if name != "F4"]  # a packed pair of F4 values has no scalar form
    corpus += [
        ("no tensors", save({})),
        ("no tensors, metadata only", save({}, metadata={"format": "pt"})),
        ("zero-size tensors", save({"a": torch.zeros(0), "b": torch.zeros(3, 0), "c": torch.ones(2),
                                    "d": torch.zeros(0, 2**40, dtype=torch.float16)})),
        ("only zero-size tensors", save({"a": torch.zeros(0), "b": torch.zeros(0, 5, dtype=torch.int64)})),
        ("metadata", save({"w": torch.ones(2)}, metadata={"format": "pt", "": "", "ünï": "cödé 😀",
                                                         "quote\"back\\slash": "line\nbreak\ttab"})),
        ("50 metadata keys", save({"w": torch.ones(1)}, metadata={f"k{i}": "v" * i for i in range(50)})),
        ("odd names", save({name: torch.full((1,), float(i)) for i, name in enumerate(
            ["", " ", "a\nb", '"', "\\", "__metadata", "__metadata__ ", "ünïcödé", "😀", "\u2028", "\x7f", "\x00",
             "a" * 1000, "\ud7ff\ue000", "model.layers.0.self_attn.q_proj.weight"])})),
        ("200 tensors", save({f"layer.{i}.w": torch.full((i % 5 + 1,), float(i)) for i in range(200)})),
    ]
    # The library reads F6 but cannot write it; and a header need not be padded, ordered or compact.
    six = [("F6_E2M3", [4], 0), ("F6_E3M2", [2, 4], 3)]
    corpus.append(("F6 dtypes (assembled)", assemble({n: _entry(n, s, o) for n, s, o in six}, bytes(range(9)))))
    corpus.append(("unpadded, unordered, spaced header (assembled)", _spaced_header()))
    return corpus


def _spaced_header() -> bytes:
    text = ('\n {\t"b" : {"shape":[2],"data_offsets":[8,16],"dtype":"F32"} ,\r\n'
            ' "a":{"data_offsets":[0,8],"dtype":"I32","shape":[1,2]},"__metadata__":null }\n')
    return _with_header(text, bytes(16))


def _with_header(text: str, data: bytes = bytes(8)) -> bytes:
    """A file of header ``text`` (undecodable bytes kept by ``surrogateescape``) and data block ``data``."""
    return _with_raw_header(text.encode("utf-8", "surrogateescape"), data)


def _with_raw_header(raw: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(raw)) + raw + data


_A = '"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}'  # one F32 tensor of 8 bytes, as header text


def _one(dtype: str = '"F32"', shape: str = "[2]", offsets: str = "[0,8]", **extra: str) -> str:
    """The header text of one tensor ``a`` with these fields, each given as JSON text."""
    fields = {"dtype": dtype, "shape": shape, "data_offsets": offsets, **extra}
    return '{"a":{' + ",".join(f'"{key}":{value}' for key, value in fields.items()) + "}}"


def malformed_corpus() -> list[tuple[str, str, bytes]]:
    """Files that break one rule each: (what is wrong, the rule the parser must name, the bytes)."""
    pack = struct.pack
    cases: list[tuple[str, str, bytes]] = [
        ("empty file", "header length", b""),
        ("7 bytes", "header length", bytes(7)),
        ("N = 2**64 - 1", "header length", b"\xff" * 8 + b"{}"),
        ("N = 2**63", "header length", pack("<Q", 2**63) + b"{}"),
        ("N just over 100 MB", "header length", pack("<Q", MAX_HEADER_BYTES + 1) + b"{}"),
        ("N one past the end", "header length", pack("<Q", 3) + b"{}"),
        ("N = 0", "JSON", pack("<Q", 0)),
        ("0xFF in the header", "UTF-8", _with_raw_header(b'{"\xff":1}')),
        ("a cut multi-byte character", "UTF-8", _with_raw_header(b'{"\xc3"')),
        ("an overlong encoding", "UTF-8", _with_raw_header(b'{"\xc0\xaf"')),
        ("an encoded surrogate", "UTF-8", _with_raw_header(b'{"\xed\xa0\x80"')),
        ("a code point past U+10FFFF", "UTF-8", _with_raw_header(b'{"\xf4\x90\x80\x80"')),
    ]
    json_texts = {
        "NaN": _one(x="NaN"), "Infinity": _one(x="Infinity"), "-Infinity": _one(x="-Infinity"),
        "1e309": _one(x="1e309"), "-1e309": _one(x="-1e309"), "a 400-digit integer": _one(x="1" + "0" * 400),
        "a leading zero": _one(shape="[02]"), "a plus sign": _one(shape="[+2]"), "a bare fraction": _one(x=".5"),
        "a dangling point": _one(x="1."), "hexadecimal": _one(x="0x10"),
        "a trailing comma in an object": "{" + _A + ",}", "a trailing comma in an array": _one(shape="[2,]"),
        "a // comment": "{" + _A + "// c\n}", "a /* comment */": "{/* c */" + _A + "}",
        "single quotes": "{'a':1}", "an unquoted key": "{a:1}", "a raw control character": '{"a\x01":1}',
        "an unknown escape": '{"a\\x":1}', "a lone high surrogate": '{"\\ud800":1}',
        "a lone low surrogate": '{"\\udc00":1}', "a high surrogate before a letter": '{"\\ud800\\u0041":1}',
        "a surrogate in metadata": '{"__metadata__":{"k":"\\ud800"},' + _A + "}",
        "a surrogate in a tensor name": '{"a\\udbff":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
        "a surrogate in an unknown field": _one(x='"\\udfff"'), "NUL after the value": "{" + _A + "}\x00",
        "a second value": "{" + _A + "}{}", "a byte order mark": "\ufeff{" + _A + "}",
        "form feed as whitespace": "{\x0c" + _A + "}", "no-break space as whitespace": "{\u00a0" + _A + "}",
        "128 levels deep": _one(x="[" * 126 + "]" * 126), "100 000 levels deep": "[" * 100_000 + "]" * 100_000,
        "an unterminated string": '{"a', "a misspelt true": _one(x="tru"), "nothing but spaces": "   ",
    }
    cases += [(what, "JSON", _with_header(text)) for what, text in json_texts.items()]
    entry = json.loads("{" + _A + "}")["a"]
    structure = [
        ("header object", "the header is an array", "[]"), ("header object", "the header is a string", '"ab"'),
        ("header object", "the header is a number", "8"), ("header object", "the header is null", "null"),
        ("header object", "the header is true", "true"),
        ("header object", "__metadata__ twice", '{"__metadata__":{},"__metadata__":{},' + _A + "}"),
        ("header object", "__metadata__ null, then again", '{"__metadata__":null,' + _A + ',"__metadata__":{}}'),
        ("metadata", "metadata is an array", '{"__metadata__":["x"],' + _A + "}"),
        ("metadata", "metadata is a string", '{"__metadata__":"x",' + _A + "}"),
        ("metadata", "a metadata value is a number", '{"__metadata__":{"step":3},' + _A + "}"),
        ("metadata", "a metadata value is null", '{"__metadata__":{"k":null},' + _A + "}"),
        ("metadata", "a metadata value is an object", '{"__metadata__":{"k":{}},' + _A + "}"),
        ("tensor entry", "an entry is an array", '{"a":[1,2]}'), ("tensor entry", "an entry is null", '{"a":null}'),
        ("tensor entry", "an entry is a string", '{"a":"F32"}'),
        ("tensor entry", "dtype twice", _one(dtype='"F32","dtype":"F32"')),
        *[("tensor entry", f"no {key}", json.dumps({"a": {k: v for k, v in entry.items() if k != key}}))
          for key in entry],
        ("dtype", "an unknown dtype", _one(dtype='"F128"')), ("dtype", "a lower-case dtype", _one(dtype='"f32"')),
        ("dtype", "an empty dtype", _one(dtype='""')), ("dtype", "a dtype with a space", _one(dtype='"F32 "')),
        ("dtype", "a number as dtype", _one(dtype="32")), ("dtype", "null as dtype", _one(dtype="null")),
        ("dtype", "an escaped but unknown dtype", _one(dtype='"F\\u0033\\u0033"')),
        ("shape", "a negative dimension", _one(shape="[-2]")), ("shape", "2.0", _one(shape="[2.0]")),
        ("shape", "2e0", _one(shape="[2e0]")), ("shape", "-0", _one(shape="[-0,2]", offsets="[0,0]")),
        ("shape", "true", _one(shape="[true]")), ("shape", "null", _one(shape="null")),
        ("shape", "a string", _one(shape='["2"]')), ("shape", "a nested list", _one(shape="[[2]]")),
        ("shape", "an object", _one(shape='{"0":2}')), ("shape", "a dimension of 2**64", _one(shape=f"[{2**64}]")),
        ("shape", "a 30-digit dimension", _one(shape="[" + "9" * 30 + "]")),
        ("shape", "2**32 x 2**32 x 0 overflows before the 0", _one(shape=f"[{2**32},{2**32},0]", offsets="[0,0]")),
        ("shape", "2**64 - 1 elements of U16", _one('"U16"', f"[{U64_MAX}]", "[0,0]")),
        ("shape", "F32 bits past 2**64", _one(shape=f"[{2**62}]", offsets="[0,0]")),
        ("shape", "three F4 values are a byte and a half", _one('"F4"', "[3]", "[0,2]")),
        ("shape", "one F6 value is 6 bits", _one('"F6_E2M3"', "[1]", "[0,1]")),
        ("data_offsets", "three offsets", _one(offsets="[0,8,8]")), ("data_offsets", "one offset", _one(offsets="[0]")),
        ("data_offsets", "strings", _one(offsets='["0","8"]')), ("data_offsets", "floats", _one(offsets="[0.0,8.0]")),
        ("data_offsets", "negative", _one(offsets="[-4,4]")), ("data_offsets", "2**64", _one(offsets=f"[0,{2**64}]")),
        ("data_offsets", "end before start", _one(offsets="[8,0]")),
        ("data_offsets", "an object", _one(offsets='{"0":0,"1":8}')), ("data_offsets", "-0", _one(offsets="[-0,8]")),
        ("byte count", "the shape needs more bytes", _one(shape="[3]")),
        ("byte count", "the shape needs fewer bytes", _one(shape="[1]")),
        ("byte count", "a zero-size shape over 8 bytes", _one(shape="[0]")),
        ("byte count", "a scalar over 8 bytes", _one(shape="[]")),
    ]
    cases += [(what, rule, _with_header(text)) for rule, what, text in structure]
    two = {"a": _entry("F32", [2], 0), "b": _entry("F32", [2], 8)}
    layout = [
        ("an overlap", {"a": two["a"], "b": {**two["b"], "data_offsets": [4, 12]}}, 12),
        ("a gap", {"a": two["a"], "b": {**two["b"], "data_offsets": [12, 20]}}, 20),
        ("past the end", two, 12), ("trailing bytes", two, 17),
        ("the first tensor starts at 4", {"a": {**two["a"], "data_offsets": [4, 12]}}, 12),
        ("two tensors on the same bytes", {"a": two["a"], "b": two["a"]}, 8),
        ("no tensors but data", {}, 8), ("a zero-size tensor past the end", {"z": _entry("F32", [0], 9)}, 8),
    ]
    cases += [(what, "layout", assemble(header, bytes(size))) for what, header, size in layout]
    return cases


def stricter_corpus() -> list[tuple[str, str, bytes]]:
    """Files the library accepts and the parser refuses on purpose: (what, the rule it names, the bytes)."""
    other = '"a":{"dtype":"I32","shape":[1,2],"data_offsets":[0,8]}'
    texts = [
        ("header object", "a tensor name twice, same entry", "{" + _A + "," + _A + "}"),
        ("header object", "a tensor name twice, another entry first", "{" + other + "," + _A + "}"),
        ("header object", "an overlapping tensor, then the same name again",
         '{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},' + _A + "}"),
        ("metadata", "a metadata key twice", '{"__metadata__":{"k":"1","k":"2"},' + _A + "}"),
        ("tensor entry", "an unknown field", _one(x="1")),
        ("tensor entry", "an unknown field that is null", _one(x="null")),
        ("tensor entry", "an unknown field 125 levels deep", _one(x="[" * 125 + "]" * 125)),
        ("tensor entry", "an unknown field twice", _one(x="1", y='"two"').replace('"y"', '"x"')),
        ("tensor entry", "an unknown field before the others", '{"a":{"x":[],' + _A[5:] + "}"),
    ]
    return [(what, rule, _with_header(text)) for rule, what, text in texts]


# ---------------------------------------------------------------------------------------------------------------
# The fuzzer

_LENGTHS = [0, 1, 7, 8, 2**31 - 1, 2**32, 2**63, U64_MAX, MAX_HEADER_BYTES, MAX_HEADER_BYTES + 1]
_NUMBERS = ["0", "-0", "1", "-1", "2", "7", "8", "16", str(2**32), str(2**63), str(U64_MAX), str(2**64),
            "1" + "0" * 30, "1e309", "-1e309", "1.0", "2e0", "1E2", "0.5", "NaN", "Infinity", "-Infinity", "00",
            "+1", ".5", "1.", "0x10", "true", "null", '"8"', "[]", "{}", "[0]", "[0,0]"]
_TOKENS = [",", "}", "{", "]", "[", ":", '"', "\\", "\\u", "\\ud800", "\\udc00", "\\ud83d\\ude00", "\\u0000",
           "\x00", "\x01", "\t", "\n", "\x0c", "\u00a0", "\ufeff", "//", "/*", "'", " ", METADATA_KEY,
           '"dtype"', '"shape"', '"data_offsets"', '"F32"', '"F4"', '"BOOL"', '"x":1,', '"__metadata__":null,',
           '"__metadata__":{"k":"v"},', "NaN", "-0", "1e309"]
_VALUES: list[Any] = [None, True, 0, -1, 2**64, U64_MAX, 1.5, "", "F32", "F6_E3M2", "f32", [], {}, [0], [1, 2],
                      [2**32, 2**32, 0], [0, 2**40], [U64_MAX], [-1], [[1]], {"k": "v"}, {"k": 1}]


class Mutator:
    """Random, seeded changes to a valid file: bytes, the length field, the header text and its JSON values."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def mutate(self, data: bytes) -> bytes:
        """One to three changes stacked on ``data``."""
        for _ in range(self.rng.randint(1, 3)):
            data = self.rng.choice(self._operators())(data)
        return data

    def _operators(self) -> list[Callable[[bytes], bytes]]:
        return [self.flip_bit, self.set_byte, self.cut, self.splice_bytes, self.set_length, self.insert_token,
                self.replace_number, self.edit_json, self.edit_json, self.generate, self.generate]

    def flip_bit(self, data: bytes) -> bytes:
        if not data:
            return data
        position = self.rng.randrange(len(data))
        return data[:position] + bytes([data[position] ^ (1 << self.rng.randrange(8))]) + data[position + 1:]

    def set_byte(self, data: bytes) -> bytes:
        if not data:
            return data
        position = self.rng.randrange(min(len(data), 8 + _header_length(data)))
        value = self.rng.choice([0, 0xFF, 0x7F, 0x80, 0xC3, ord('"'), ord("}"), ord(","), self.rng.randrange(256)])
        return data[:position] + bytes([value]) + data[position + 1:]

    def cut(self, data: bytes) -> bytes:
        if self.rng.random() < 0.5:
            return data[:self.rng.randrange(len(data) + 1)]
        start = self.rng.randrange(len(data) + 1)
        return data[:start] + data[start + self.rng.randint(1, 16):]

    def splice_bytes(self, data: bytes) -> bytes:
        position = self.rng.randrange(len(data) + 1)
        extra = self.rng.choice([bytes(self.rng.randint(1, 16)), self.rng.randbytes(self.rng.randint(1, 8)),
                                 data[position:position + 16]])
        return data[:position] + extra + data[position:]

    def set_length(self, data: bytes) -> bytes:
        n = _header_length(data)
        value = self.rng.choice([*_LENGTHS, n + self.rng.randint(-3, 3), len(data) - 8, len(data) - 7])
        return struct.pack("<Q", max(0, min(value, U64_MAX))) + data[8:]

    def insert_token(self, data: bytes) -> bytes:
        text, block = _split(data)
        position = self.rng.randrange(len(text) + 1)
        token = self.rng.choice(_TOKENS)
        if self.rng.random() < 0.3:  # replace instead of insert
            return _with_header(text[:position] + token + text[position + len(token):], block)
        return _with_header(text[:position] + token + text[position:], block)

    def replace_number(self, data: bytes) -> bytes:
        text, block = _split(data)
        numbers = list(re.finditer(r"-?\d+", text))
        if not numbers:
            return self.insert_token(data)
        found = self.rng.choice(numbers)
        return _with_header(text[:found.start()] + self.rng.choice(_NUMBERS) + text[found.end():], block)

    def edit_json(self, data: bytes) -> bytes:
        """Change one value of a tensor entry or the metadata, then maybe re-tile the offsets so the file fits."""
        text, block = _split(data)
        try:
            header = json.loads(text)
        except ValueError:
            return self.insert_token(data)
        if not isinstance(header, dict) or not header:
            return self.generate(data)
        pairs = list(header.items())
        index = self.rng.randrange(len(pairs))
        name, entry = pairs[index]
        choice = self.rng.random()
        if isinstance(entry, dict) and choice < 0.6:
            entry = dict(entry)
            key = self.rng.choice([*entry, "x"])
            entry[key] = self._value_like(entry.get(key))
            pairs[index] = (name, entry)
        elif choice < 0.75:
            pairs.insert(self.rng.randrange(len(pairs) + 1), pairs[index])  # a repeated key
        elif choice < 0.85:
            del pairs[index]
        else:
            pairs.insert(0, (METADATA_KEY, self.rng.choice([None, {"k": "v"}, {"k": "v", "k2": ""}, {"k": 1}, []])))
        if self.rng.random() < 0.6:
            pairs, block = _retile(pairs)
        return assemble(pairs, block) if self.rng.random() < 0.9 else assemble(pairs, block)[:-1]

    def _value_like(self, old: Any) -> Any:
        if isinstance(old, list) and old and all(isinstance(v, int) for v in old) and self.rng.random() < 0.6:
            new = list(old)
            position = self.rng.randrange(len(new))
            new[position] = self.rng.choice([0, 1, new[position] + 1, max(0, new[position] - 1), 2**32, U64_MAX, 2**64])
            if self.rng.random() < 0.3:
                new.insert(self.rng.randrange(len(new) + 1), self.rng.choice([0, 1, 2**40]))
            return new
        if isinstance(old, str) and self.rng.random() < 0.5:
            return self.rng.choice(list(DTYPE_BITS))
        return self.rng.choice(_VALUES)

    def generate(self, data: bytes) -> bytes:
        """A new, valid file from scratch: random names, dtypes, shapes (zeros and huge dimensions) and metadata."""
        names = ["", "a", "w.0", "ü😀", "\x00", "\\", '"', METADATA_KEY + "x", "\ud7ff"]
        pairs: list[tuple[str, Any]] = []
        if self.rng.random() < 0.5:
            metadata = {self.rng.choice(names) + str(i): self.rng.choice(names) for i in range(self.rng.randint(0, 3))}
            pairs.append((METADATA_KEY, self.rng.choice([metadata, None])))
        for i in range(self.rng.randint(0, 5)):
            dtype = self.rng.choice(list(DTYPE_BITS))
            dims = [self.rng.choice([0, 1, 2, 3, 4, 8]) for _ in range(self.rng.randint(0, 3))]
            if self.rng.random() < 0.2:
                dims.insert(self.rng.randrange(len(dims) + 1), self.rng.choice([2**32, 2**40, U64_MAX]))
            pairs.append((self.rng.choice(names) + str(i), {"dtype": dtype, "shape": dims, "data_offsets": [0, 0]}))
        pairs, block = _retile(pairs)
        return assemble(pairs, block)


def _sorted_metadata(data: bytes) -> bytes:
    """The same file with its metadata keys in sorted order: the library writes them in a random order each time,
    and the fuzzer's inputs must depend on the seed alone."""
    text, block = _split(data)
    header = json.loads(text, object_pairs_hook=dict)
    if not isinstance(header.get(METADATA_KEY), dict):
        return data
    header[METADATA_KEY] = dict(sorted(header[METADATA_KEY].items()))
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    return _with_raw_header(raw + b" " * (-len(raw) % 8), block)  # padded to 8 bytes, as the library pads


def _header_length(data: bytes) -> int:
    return struct.unpack("<Q", data[:8])[0] if len(data) >= 8 else 0


def _split(data: bytes) -> tuple[str, bytes]:
    """The header text (undecodable bytes kept as surrogates) and the data block of a file."""
    n = min(_header_length(data), max(0, len(data) - 8))
    return data[8:8 + n].decode("utf-8", "surrogateescape"), data[8 + n:]


def _retile(pairs: list[tuple[str, Any]]) -> tuple[list[tuple[str, Any]], bytes]:
    """Offsets that tile the tensors one after another, and a data block of that size (when it is small)."""
    position, tiled = 0, []
    for name, entry in pairs:
        dtype, shape = (entry.get("dtype"), entry.get("shape")) if isinstance(entry, dict) else (None, None)
        if name != METADATA_KEY and isinstance(dtype, str) and dtype in DTYPE_BITS and isinstance(shape, list) \
                and all(type(d) is int and d >= 0 for d in shape):
            bits = math.prod(entry["shape"]) * DTYPE_BITS[entry["dtype"]]
            size = -(-bits // 8)
            if size <= 4096:
                entry = {**entry, "data_offsets": [position, position + size]}
                position += size
        tiled.append((name, entry))
    return tiled, random.Random(position).randbytes(position)


def mutation_inputs(seed: int) -> Iterator[bytes]:
    """An endless, seeded stream of mutated valid files (the same seed gives the same stream)."""
    bases = [_sorted_metadata(data) for _, data in valid_corpus() if len(data) <= 4096]  # small ones mutate fastest
    mutator = Mutator(seed)
    while True:
        yield mutator.mutate(mutator.rng.choice(bases))


def scratch_folder() -> tempfile.TemporaryDirectory:
    """A temporary folder for the library's input file, in memory (/dev/shm) where there is one: writing a file
    there is many times faster than on a disk, and the fuzzer writes one per input."""
    shm = Path("/dev/shm")
    in_memory = shm.is_dir() and os.access(shm, os.W_OK)
    return tempfile.TemporaryDirectory(prefix="safetensors-fuzz-", dir=shm if in_memory else None)


@dataclass
class FuzzReport:
    """What a fuzzing run did: inputs tried, how the library and the parser answered, and every failure."""

    inputs: int = 0
    seconds: float = 0.0
    library_accepted: int = 0
    parser_stricter: int = 0
    rules: Counter = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for the terminal."""
        rules = ", ".join(f"{rule} {count}" for rule, count in self.rules.most_common())
        return (f"{self.inputs:,} inputs in {self.seconds:.0f} s: the library accepted {self.library_accepted:,}, "
                f"the parser refused {self.parser_stricter:,} of those on purpose (stricter); rules named: {rules}; "
                f"failures: {len(self.failures)}")


def fuzz(seconds: float, seed: int = 0, *, max_inputs: int | None = None, keep: Path | None = None,
         log: Callable[[str], None] | None = None) -> FuzzReport:
    """Mutate valid files for ``seconds`` (or ``max_inputs``) and :func:`compare` each; failures go to ``keep``."""
    report = FuzzReport()
    inputs = mutation_inputs(seed)
    first = next(inputs)  # builds the corpus before the clock starts
    start = time.perf_counter()
    tracemalloc.start()
    try:
        with scratch_folder() as scratch:
            path = Path(scratch) / "input.safetensors"
            for data in itertools.chain([first], inputs):
                if time.perf_counter() - start > seconds or (max_inputs is not None and report.inputs >= max_inputs):
                    break
                report.inputs += 1
                result = compare(data, path)
                report.rules[result.parser.rule or "accepted"] += 1
                report.library_accepted += result.library.accepted
                report.parser_stricter += result.library.accepted and result.stricter
                if result.failure is None:
                    continue
                report.failures.append(result.failure)
                if keep is not None:
                    save_regression(result.failure, keep)
                if log:
                    log(f"FAILURE: {result.failure.problem}; library: {result.failure.library[:120]}; "
                        f"parser: {result.failure.parser[:120]}")
    finally:
        tracemalloc.stop()
    report.seconds = time.perf_counter() - start
    return report


def save_regression(failure: Failure, folder: Path = REGRESSIONS) -> Path:
    """Keep a failing input as a regression case, named by its content (a second copy is not written)."""
    import hashlib

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(failure.data).hexdigest()[:16]}.safetensors"
    if not path.exists():
        path.write_bytes(failure.data)
    return path
