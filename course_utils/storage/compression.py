"""Can a checkpoint be compressed without losing a bit? General compressors, byte grouping and an entropy coder.

The idea, for 16-bit floats (bf16, fp16): a weight's sign and mantissa bits look random, but its exponent takes
only a handful of values, because trained weights cluster around one magnitude. General compressors (zstd, lzma)
see interleaved bytes and find little to exploit. Splitting every 16-bit value into an *exponent-ish* byte and a
*sign/mantissa-ish* byte (:func:`split_streams`) puts the predictable bits together; an entropy coder then spends
about ``H`` bits per symbol, where ``H`` is the order-0 (symbol-by-symbol) Shannon entropy of the stream
(:func:`entropy_bits`). ``n * H / 8`` bytes is the bound no coder of single symbols can beat.

The entropy coder here is rANS (range asymmetric numeral systems, Duda 2013) with a static order-0 model: a
64-bit state, 32-bit output words, and many interleaved lanes so that numpy processes all lanes in one vector
operation per step. It lands within a fraction of a percent of the bound; what it pays is each lane's final
state and the frequency table. Decoding returns the exact bytes: every round trip is bit-identical.
"""

from __future__ import annotations

import io
import lzma
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from course_utils.storage import safetensors_io

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

SIXTEEN_BIT_DTYPES = ("BF16", "F16")
ZSTD_LEVEL = 19
RANS_SCALE_BITS = 16  # symbol frequencies are quantised to sum to 2**16
RANS_LOWER = 1 << 31  # the state stays in [2**31, 2**63)
RANS_STEPS_PER_LANE = 4096  # symbols per lane; more lanes = more vector work per step, more final states
_WORD_MASK = np.uint64(0xFFFFFFFF)


# ---------------------------------------------------------------------------------------------------------------
# General-purpose compressors


def zstd_compress(data: bytes, level: int = ZSTD_LEVEL) -> bytes:
    """Zstandard at ``level`` (19: slow, strong; 3 is zstd's default)."""
    import zstandard

    return zstandard.ZstdCompressor(level=level).compress(data)


def zstd_decompress(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdDecompressor().decompress(data)


def lzma_compress(data: bytes, preset: int = 6) -> bytes:
    """xz/LZMA at ``preset`` (6 is xz's default)."""
    return lzma.compress(data, preset=preset)


# ---------------------------------------------------------------------------------------------------------------
# 16-bit floats: bits, byte grouping, entropy


def float16_bits(tensor: torch.Tensor) -> np.ndarray:
    """The raw bit patterns of a bf16 or fp16 tensor as a flat uint16 array."""
    import torch

    if tensor.dtype not in (torch.bfloat16, torch.float16):
        raise TypeError(f"expected a bfloat16 or float16 tensor, got {tensor.dtype}")
    return tensor.detach().cpu().contiguous().view(torch.int16).numpy().view(np.uint16).reshape(-1)


def split_streams(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Byte-group 16-bit floats: rotate each value left by one bit, then split the high and the low byte.

    The rotation moves the sign bit to the bottom. For bf16 (1 sign, 8 exponent, 7 mantissa bits) the high byte is
    then exactly the exponent and the low byte is the 7 mantissa bits plus the sign; for fp16 (1, 5, 10) the high
    byte is the 5 exponent bits and the top 3 mantissa bits, the low byte the other 7 mantissa bits and the sign.
    """
    bits = np.asarray(bits, dtype=np.uint16).reshape(-1)
    rotated = (bits << np.uint16(1)) | (bits >> np.uint16(15))
    return (rotated >> np.uint16(8)).astype(np.uint8), (rotated & np.uint16(0xFF)).astype(np.uint8)


def join_streams(exponent_ish: np.ndarray, sign_mantissa_ish: np.ndarray) -> np.ndarray:
    """Undo :func:`split_streams`: the original uint16 bit patterns."""
    rotated = (exponent_ish.astype(np.uint16) << np.uint16(8)) | sign_mantissa_ish.astype(np.uint16)
    return (rotated >> np.uint16(1)) | (rotated << np.uint16(15))


def bf16_exponents(bits: np.ndarray) -> np.ndarray:
    """The 8-bit exponent field of bf16 bit patterns (bits 14..7)."""
    return ((np.asarray(bits, dtype=np.uint16) >> np.uint16(7)) & np.uint16(0xFF)).astype(np.uint8)


def _segments(n: int, segment_lengths: Sequence[int] | None) -> np.ndarray:
    """Validated segment lengths (one segment of all ``n`` symbols when None)."""
    lengths = np.asarray([n] if segment_lengths is None else segment_lengths, dtype=np.int64).reshape(-1)
    if (lengths < 0).any() or int(lengths.sum()) != n:
        raise ValueError(f"segment lengths must be >= 0 and add up to the {n} symbols, got a sum of {int(lengths.sum())}")
    return lengths


def entropy_bits(symbols: np.ndarray) -> float:
    """Order-0 Shannon entropy in bits per symbol: -sum p log2 p over the symbols' frequencies."""
    symbols = np.asarray(symbols).reshape(-1)
    if symbols.size == 0:
        return 0.0
    counts = np.bincount(symbols.astype(np.int64))
    p = counts[counts > 0] / symbols.size
    return float(-(p * np.log2(p)).sum())


def entropy_bound_bytes(symbols: np.ndarray, segment_lengths: Sequence[int] | None = None) -> float:
    """The fewest bytes an order-0 coder can spend on ``symbols``: n * H / 8, or its sum over segments when each
    segment (e.g. each tensor) has its own symbol frequencies."""
    symbols = np.asarray(symbols).reshape(-1)
    bounds = np.cumsum(_segments(symbols.size, segment_lengths))[:-1]
    return sum(part.size * entropy_bits(part) / 8 for part in np.split(symbols, bounds))


# ---------------------------------------------------------------------------------------------------------------
# rANS: an entropy coder within a fraction of a percent of the order-0 bound


def quantize_frequencies(counts: np.ndarray, scale_bits: int = RANS_SCALE_BITS) -> np.ndarray:
    """Integer frequencies summing to 2**scale_bits, each >= 1 where the count is > 0, close to the proportions."""
    counts = np.asarray(counts, dtype=np.float64)
    total, target = counts.sum(), 1 << scale_bits
    present = counts > 0
    n_present = int(present.sum())
    if n_present == 0:
        return np.zeros(counts.size, np.uint64)
    if n_present > target:
        raise ValueError(f"{n_present} distinct symbols do not fit in 2**{scale_bits} frequency slots")
    freqs = np.where(present, np.maximum(1, np.floor(counts * target / total)), 0).astype(np.int64)
    # Hand out (or take back) the rounding remainder where it costs the fewest bits: the most frequent symbols.
    excess = int(freqs.sum()) - target
    order = np.argsort(-counts, kind="stable")[:n_present]
    i = 0
    while excess != 0:
        s = order[i % n_present]
        if excess < 0:
            freqs[s] += 1
            excess += 1
        elif freqs[s] > 1:
            freqs[s] -= 1
            excess -= 1
        i += 1
    return freqs.astype(np.uint64)


@dataclass(frozen=True)
class LaneLayout:
    """How symbols are dealt to lanes: each lane codes one contiguous run of one segment.

    Lanes are sorted by run length, longest first, so at step t the lanes still running are a prefix.
    """

    segment: np.ndarray  # int64[lanes]: which segment (frequency table) each lane uses
    start: np.ndarray  # int64[lanes]: index of the lane's first symbol
    length: np.ndarray  # int64[lanes]: symbols in the lane
    steps: int

    def active(self, t: int) -> int:
        """How many lanes still have a symbol at step ``t``."""
        return int(np.searchsorted(-self.length, -t, side="left"))


def lane_layout(segment_lengths: np.ndarray, steps_per_lane: int = RANS_STEPS_PER_LANE) -> LaneLayout:
    """Split every segment into runs of at most ``steps_per_lane`` symbols, one lane each."""
    segments, starts, lengths = [], [], []
    offset = 0
    for g, n_g in enumerate(int(x) for x in segment_lengths):
        if n_g:
            lanes = math.ceil(n_g / steps_per_lane)
            chunk = math.ceil(n_g / lanes)
            for i in range(lanes):
                segments.append(g)
                starts.append(offset + i * chunk)
                lengths.append(min(chunk, n_g - i * chunk))
        offset += n_g
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    length = np.asarray(lengths, dtype=np.int64)[order]
    return LaneLayout(np.asarray(segments, dtype=np.int64)[order], np.asarray(starts, dtype=np.int64)[order],
                      length, int(length[0]) if length.size else 0)


@dataclass(frozen=True)
class RansStream:
    """An rANS-coded byte stream: what the decoder needs, and its serialised form."""

    segment_lengths: np.ndarray  # int64[segments]
    scale_bits: int
    steps_per_lane: int
    freqs: np.ndarray  # uint64[segments, 256]: each segment's quantised frequencies
    states: np.ndarray  # uint64[lanes]: the encoder's final states, where decoding starts
    words: np.ndarray  # uint32: the renormalisation output

    @property
    def n(self) -> int:
        return int(self.segment_lengths.sum())

    def to_bytes(self) -> bytes:
        """Serialise: a small header, the frequency tables (zstd-packed: neighbouring tensors have similar ones),
        the final lane states, and the words."""
        tables = []
        for length, freqs in zip(self.segment_lengths, self.freqs):
            used = np.flatnonzero(freqs)
            tables += [struct.pack("<QH", int(length), len(used)), used.astype(np.uint8).tobytes(),
                       (freqs[used] - 1).astype("<u2").tobytes()]
        packed_tables = zstd_compress(b"".join(tables))
        head = struct.pack(_STREAM_HEAD, self.scale_bits, self.steps_per_lane, len(self.segment_lengths),
                           len(self.states), len(packed_tables))
        return b"".join([head, packed_tables, self.states.astype("<u8").tobytes(), self.words.astype("<u4").tobytes()])

    @classmethod
    def from_bytes(cls, blob: bytes) -> RansStream:
        scale_bits, steps_per_lane, n_segments, n_lanes, table_size = struct.unpack_from(_STREAM_HEAD, blob)
        pos = struct.calcsize(_STREAM_HEAD)
        tables = zstd_decompress(blob[pos:pos + table_size])
        pos += table_size
        lengths, freqs = np.zeros(n_segments, np.int64), np.zeros((n_segments, 256), np.uint64)
        at = 0
        for g in range(n_segments):
            lengths[g], n_used = struct.unpack_from("<QH", tables, at)
            at += struct.calcsize("<QH")
            used = np.frombuffer(tables, np.uint8, n_used, at)
            at += n_used
            freqs[g, used] = np.frombuffer(tables, "<u2", n_used, at).astype(np.uint64) + 1
            at += 2 * n_used
        states = np.frombuffer(blob, "<u8", n_lanes, pos).astype(np.uint64)
        pos += 8 * n_lanes
        words = np.frombuffer(blob, "<u4", (len(blob) - pos) // 4, pos).astype(np.uint32)
        return cls(lengths, scale_bits, steps_per_lane, freqs, states, words)


_STREAM_HEAD = "<BIIII"


def rans_encode(symbols: np.ndarray, segment_lengths: Sequence[int] | None = None, *,
                scale_bits: int = RANS_SCALE_BITS, steps_per_lane: int = RANS_STEPS_PER_LANE) -> RansStream:
    """Encode bytes with interleaved rANS, one frequency table per segment (one segment when None).

    Every lane codes a run of one segment; all lanes advance together, one numpy operation per step.
    """
    symbols = np.asarray(symbols, dtype=np.uint8).reshape(-1)
    lengths = _segments(symbols.size, segment_lengths)
    bounds = np.cumsum(lengths)[:-1]
    freqs = np.stack([quantize_frequencies(np.bincount(part, minlength=256), scale_bits)
                      for part in np.split(symbols, bounds)]) if lengths.size else np.zeros((0, 256), np.uint64)
    cumulative = np.concatenate([np.zeros((len(freqs), 1), np.uint64), np.cumsum(freqs, axis=1)[:, :-1]], axis=1)
    layout = lane_layout(lengths, steps_per_lane)
    state = np.full(layout.length.size, RANS_LOWER, dtype=np.uint64)
    blocks: list[np.ndarray] = [np.empty(0, np.uint32)] * layout.steps
    scale, top_shift = np.uint64(scale_bits), np.uint64(63 - scale_bits)
    for t in range(layout.steps - 1, -1, -1):  # rANS is a stack: encode backwards so that decoding runs forwards
        k = layout.active(t)
        g, s = layout.segment[:k], symbols[layout.start[:k] + t]
        f, c, x = freqs[g, s], cumulative[g, s], state[:k]
        emit = x >= (f << top_shift)  # renormalise first, so that the coded state stays below 2**63
        blocks[t] = (x[emit] & _WORD_MASK).astype(np.uint32)
        x = np.where(emit, x >> np.uint64(32), x)
        state[:k] = ((x // f) << scale) + (x % f) + c
    words = np.concatenate(blocks) if blocks else np.empty(0, np.uint32)
    return RansStream(lengths, scale_bits, steps_per_lane, freqs, state, words)


def rans_decode(stream: RansStream) -> np.ndarray:
    """Decode a :class:`RansStream` back to its bytes; checks that every lane ends in its starting state."""
    scale_bits, freqs = stream.scale_bits, stream.freqs.astype(np.uint64)
    used = freqs.sum(axis=1)
    if np.any((used != 0) & (used != 1 << scale_bits)) or np.any((used == 0) & (stream.segment_lengths > 0)):
        raise ValueError("corrupt rANS stream: a frequency table does not sum to 2**scale_bits")
    layout = lane_layout(stream.segment_lengths, stream.steps_per_lane)
    if layout.length.size != stream.states.size:
        raise ValueError("corrupt rANS stream: the number of lane states does not match the segments")
    cumulative = np.concatenate([np.zeros((len(freqs), 1), np.uint64), np.cumsum(freqs, axis=1)[:, :-1]], axis=1)
    slot_to_symbol = np.zeros((len(freqs), 1 << scale_bits), np.uint8)
    for g, row in enumerate(freqs):
        if row.sum():
            slot_to_symbol[g] = np.repeat(np.arange(256, dtype=np.uint8), row.astype(np.int64))
    out = np.zeros(stream.n, np.uint8)
    state = stream.states.astype(np.uint64).copy()
    words = stream.words.astype(np.uint64)
    mask, scale, pos = np.uint64((1 << scale_bits) - 1), np.uint64(scale_bits), 0
    for t in range(layout.steps):
        k = layout.active(t)
        g, x = layout.segment[:k], state[:k]
        slot = x & mask
        s = slot_to_symbol[g, slot]
        x = freqs[g, s] * (x >> scale) + slot - cumulative[g, s]
        need = np.flatnonzero(x < RANS_LOWER)
        if need.size:
            if pos + need.size > words.size:
                raise ValueError("corrupt rANS stream: it ran out of words")
            x[need] = (x[need] << np.uint64(32)) | words[pos:pos + need.size]
            pos += need.size
        state[:k] = x
        out[layout.start[:k] + t] = s
    if pos != words.size or not np.all(state == RANS_LOWER):
        raise ValueError("corrupt rANS stream: the decoder did not end where the encoder started")
    return out


def rans_compress(symbols: np.ndarray, segment_lengths: Sequence[int] | None = None) -> bytes:
    """rANS-encode bytes (one frequency table per segment) and serialise the result."""
    return rans_encode(symbols, segment_lengths).to_bytes()


def rans_decompress(blob: bytes) -> np.ndarray:
    return rans_decode(RansStream.from_bytes(blob))


# ---------------------------------------------------------------------------------------------------------------
# Whole checkpoints: every 16-bit tensor byte-grouped and entropy-coded, everything else through zstd

_MAGIC = b"LWB16\x01"
CODERS = ("rans", "zstd")
STREAM_NAMES = ("exponent-ish", "sign/mantissa-ish")
# Which streams get one frequency table per tensor: exponents differ from tensor to tensor (norm weights sit near
# 1, projections near 0.02), so per-tensor tables pay for themselves; sign/mantissa bytes are near-uniform
# everywhere, and 39 tables of 256 entries would cost more than they save.
PER_TENSOR_TABLES = (True, False)


@dataclass(frozen=True)
class SixteenBitStreams:
    """A safetensors file taken apart: the bytes that are not 16-bit floats, and the two byte streams."""

    rest: bytes  # the 8-byte length, the JSON header and any non-16-bit tensors, in file order
    streams: tuple[np.ndarray, np.ndarray]  # exponent-ish, sign/mantissa-ish
    tensor_sizes: tuple[int, ...]  # values per 16-bit tensor, in file order

    def segments(self, index: int) -> tuple[int, ...] | None:
        """Segment lengths for stream ``index``: one per tensor, or None for a single table."""
        return self.tensor_sizes if PER_TENSOR_TABLES[index] else None


def _sixteen_bit_ranges(header: safetensors_io.SafetensorsHeader) -> list[tuple[int, int]]:
    return [header.file_range(t.name) for t in header if t.dtype in SIXTEEN_BIT_DTYPES]


def split_checkpoint(data: bytes) -> SixteenBitStreams:
    """Validate a safetensors file's bytes and byte-group all its bf16/fp16 tensors into two streams."""
    header = safetensors_io.parse_bytes(data)
    view = memoryview(data)
    rest, values, position = [], [], 0
    for start, end in _sixteen_bit_ranges(header):
        rest.append(view[position:start])
        values.append(np.frombuffer(view[start:end], dtype="<u2"))
        position = end
    rest.append(view[position:])
    bits = np.concatenate(values).astype(np.uint16) if values else np.empty(0, np.uint16)
    return SixteenBitStreams(b"".join(rest), split_streams(bits), tuple(v.size for v in values))


def _encode_parts(split: SixteenBitStreams, coder: str, zstd_level: int = ZSTD_LEVEL) -> list[bytes]:
    if coder not in CODERS:
        raise ValueError(f"coder must be one of {CODERS}, got {coder!r}")
    parts = [zstd_compress(split.rest, zstd_level)]
    for i, stream in enumerate(split.streams):
        if coder == "rans":
            coded = rans_compress(stream, split.segments(i))
            # A stream with nothing to squeeze (native fp16 mantissas) is stored as it is: never worse than raw.
            parts.append(b"r" + coded if len(coded) < stream.size else b"s" + stream.tobytes())
        else:
            parts.append(zstd_compress(stream.tobytes(), zstd_level))
    return parts


def _pack(coder: str, parts: list[bytes]) -> bytes:
    return _MAGIC + coder[0].encode() + struct.pack("<3Q", *map(len, parts)) + b"".join(parts)


def compress_checkpoint(data: bytes, coder: str = "rans", zstd_level: int = ZSTD_LEVEL) -> bytes:
    """Losslessly compress a safetensors file's bytes: 16-bit tensors byte-grouped and coded with ``coder``
    (``"rans"`` or ``"zstd"``), the header and other tensors with zstd."""
    return _pack(coder, _encode_parts(split_checkpoint(data), coder, zstd_level))


def decompress_checkpoint(blob: bytes) -> bytes:
    """Undo :func:`compress_checkpoint`, returning the original file's bytes exactly."""
    if not blob.startswith(_MAGIC):
        raise ValueError("not a compress_checkpoint() blob: the magic bytes are missing")
    coder = blob[len(_MAGIC):len(_MAGIC) + 1]
    offset = len(_MAGIC) + 1
    sizes = struct.unpack_from("<3Q", blob, offset)
    offset += struct.calcsize("<3Q")
    parts = []
    for size in sizes:
        parts.append(blob[offset:offset + size])
        offset += size
    rest = zstd_decompress(parts[0])
    if coder == b"r":
        streams = [rans_decompress(p[1:]) if p[:1] == b"r" else np.frombuffer(p[1:], np.uint8) for p in parts[1:]]
    else:
        streams = [np.frombuffer(zstd_decompress(p), np.uint8) for p in parts[1:]]
    bits = join_streams(*streams).astype("<u2")
    # The header sits at the front of `rest`; with the total size known, it says where each tensor goes.
    total = len(rest) + bits.nbytes
    (header_size,) = struct.unpack_from("<Q", rest)
    metadata, tensors = safetensors_io.parse_header_bytes(rest[8:8 + header_size], total - 8 - header_size)
    header = safetensors_io.SafetensorsHeader(header_size, metadata, tensors, total)
    out, rest_pos, bit_pos, position = io.BytesIO(), 0, 0, 0
    for start, end in _sixteen_bit_ranges(header):
        out.write(rest[rest_pos:rest_pos + start - position])
        rest_pos += start - position
        count = (end - start) // 2
        out.write(bits[bit_pos:bit_pos + count].tobytes())
        bit_pos += count
        position = end
    out.write(rest[rest_pos:])
    return out.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# The measurement the notebook shows


@dataclass(frozen=True)
class StreamStats:
    """One byte stream of a 16-bit checkpoint: entropy, bounds and coded sizes."""

    name: str
    n: int
    distinct: int
    entropy_bits: float  # one distribution for the whole file
    global_bound: float  # n * entropy_bits / 8
    bound: float  # the bound of the model the coder uses (per-tensor tables where PER_TENSOR_TABLES says so)
    per_tensor: bool
    rans_bytes: int
    zstd_bytes: int


@dataclass(frozen=True)
class CompressionResult:
    """Sizes in bytes of one checkpoint under every method, and whether the round trips were bit-identical."""

    label: str
    raw: int
    zstd: int
    lzma: int | None
    grouped_zstd: int
    grouped_rans: int
    bound: float  # the two streams' order-0 bounds plus the zstd size of the other bytes
    streams: tuple[StreamStats, ...]
    lossless: bool

    @property
    def rans_over_bound(self) -> float:
        """How far the rANS-coded checkpoint is above the bound (0.01 = 1 % more bytes)."""
        return self.grouped_rans / self.bound - 1

    def percent(self, size: float | None) -> str:
        return "-" if size is None else f"{100 * size / self.raw:.1f}%"

    def row(self) -> dict[str, Any]:
        """One table row: every size as a percentage of the raw file."""
        return {"checkpoint": self.label, "raw bytes": self.raw, "zstd": self.percent(self.zstd),
                "lzma": self.percent(self.lzma), "grouped + zstd": self.percent(self.grouped_zstd),
                "grouped + rANS": self.percent(self.grouped_rans), "entropy bound": self.percent(self.bound),
                "rANS above bound": f"{100 * self.rans_over_bound:+.2f}%",
                "bit-identical": "yes" if self.lossless else "NO"}


def measure_checkpoint(label: str, data: bytes, *, zstd_level: int = ZSTD_LEVEL, use_lzma: bool = True
                       ) -> CompressionResult:
    """Compress one safetensors file's bytes every way, check every round trip, and compute the bound."""
    split = split_checkpoint(data)
    rans_parts = _encode_parts(split, "rans", zstd_level)
    zstd_parts = _encode_parts(split, "zstd", zstd_level)
    streams = tuple(
        StreamStats(name, stream.size, int(np.unique(stream).size), entropy_bits(stream),
                    entropy_bound_bytes(stream), entropy_bound_bytes(stream, split.segments(i)),
                    PER_TENSOR_TABLES[i], len(rans_parts[i + 1]), len(zstd_parts[i + 1]))
        for i, (name, stream) in enumerate(zip(STREAM_NAMES, split.streams)))
    plain, packed, grouped = zstd_compress(data, zstd_level), _pack("rans", rans_parts), _pack("zstd", zstd_parts)
    lossless = (zstd_decompress(plain) == data and decompress_checkpoint(packed) == data
                and decompress_checkpoint(grouped) == data)
    return CompressionResult(
        label=label, raw=len(data), zstd=len(plain), lzma=len(lzma_compress(data)) if use_lzma else None,
        grouped_zstd=len(grouped), grouped_rans=len(packed),
        bound=len(rans_parts[0]) + sum(s.bound for s in streams), streams=streams, lossless=lossless)


def stream_rows(results: list[CompressionResult]) -> list[dict[str, Any]]:
    """Rows for a table of each checkpoint's two streams: distinct values, entropy, bounds and coded bytes."""
    rows = []
    for result in results:
        for s in result.streams:
            rows.append({"checkpoint": result.label, "stream": s.name, "distinct": s.distinct,
                         "H bits (whole file)": f"{s.entropy_bits:.3f}",
                         "H bits (per tensor)": f"{8 * s.bound / s.n:.3f}" if s.per_tensor else "-",
                         "bound bytes": round(s.bound), "rANS bytes": s.rans_bytes,
                         "rANS above bound": f"{100 * (s.rans_bytes / s.bound - 1):+.2f}%",
                         "zstd bytes": s.zstd_bytes})
    return rows


def low_mantissa_zero_fraction(tensors: Mapping[str, torch.Tensor]) -> float:
    """Fraction of fp16 values whose lowest 3 mantissa bits are zero (1/8 by chance; ~1 when they came from bf16)."""
    bits = np.concatenate([float16_bits(t) for t in tensors.values()])
    return float(np.mean((bits & np.uint16(0b111)) == 0))


def exact_bf16_fraction(tensors: Mapping[str, torch.Tensor]) -> float:
    """Fraction of fp32 values whose low 16 bits are zero, i.e. that are exactly bf16 numbers stored in fp32."""
    import torch

    flat = torch.cat([t.detach().float().reshape(-1) for t in tensors.values()])
    return float(((flat.view(torch.int32) & 0xFFFF) == 0).float().mean())


def sample_tensors(tensors: Mapping[str, torch.Tensor], max_mb: float | None) -> dict[str, torch.Tensor]:
    """A big model's sample: the tensors, in name order, that fit in ``max_mb`` megabytes of fp32 (all when None).

    A tensor too big for what is left is skipped, so that a large first tensor (an embedding, say: 113 MB in
    SmolLM2-135M) cannot blow the budget; when not even one tensor fits, the sample is the first ``max_mb``
    megabytes of the first tensor, flattened.
    """
    if max_mb is None:
        return dict(tensors)
    budget = int(max_mb * 1e6) // 4  # values
    chosen, total = {}, 0
    for name in sorted(tensors):
        if total + tensors[name].numel() <= budget:
            chosen[name] = tensors[name]
            total += tensors[name].numel()
    if not chosen and tensors:
        first = sorted(tensors)[0]
        chosen[first] = tensors[first].detach().flatten()[: max(1, budget)]
    return chosen


def plot_byte_histograms(checkpoints: Mapping[str, Mapping[str, torch.Tensor]]) -> Any:
    """How often each value of the exponent-ish and the sign/mantissa-ish byte occurs, per checkpoint."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    for label, tensors in checkpoints.items():
        bits = np.concatenate([float16_bits(t) for t in tensors.values()])
        for ax, stream in zip(axes, split_streams(bits)):
            counts = np.bincount(stream, minlength=256) / stream.size
            ax.step(np.arange(256), counts, where="mid", label=f"{label} (H = {entropy_bits(stream):.2f} bits)")
    for ax, title in zip(axes, ("exponent-ish byte (high byte after rotating the sign to the bottom)",
                                "sign/mantissa-ish byte (low byte)")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("byte value")
        ax.set_yscale("log")
        ax.set_xlim(0, 255)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("fraction of values")
    fig.tight_layout()
    plt.show()
    return fig
