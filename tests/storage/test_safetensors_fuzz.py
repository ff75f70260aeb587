"""safetensors_io against the safetensors library: valid and malformed corpora, kept regressions, a seeded fuzzer.

The fuzz run takes ``SAFETENSORS_FUZZ_SECONDS`` seconds (default 60); set it lower where CI time is short, higher
by hand, or run ``scripts/fuzz_safetensors.py --seconds 600`` for a long run that keeps what fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from course_utils.storage import safetensors_fuzz, safetensors_io
from course_utils.storage.safetensors_io import DTYPE_BITS, RULES, parse_bytes

FUZZ_SECONDS = float(os.environ.get("SAFETENSORS_FUZZ_SECONDS", "60"))
VALID = safetensors_fuzz.valid_corpus()
MALFORMED = safetensors_fuzz.malformed_corpus()
STRICTER = safetensors_fuzz.stricter_corpus()
REGRESSIONS = sorted(safetensors_fuzz.REGRESSIONS.glob("*.safetensors"))


@pytest.fixture(scope="module")
def scratch():
    with safetensors_fuzz.scratch_folder() as folder:
        yield Path(folder) / "input.safetensors"


@pytest.mark.parametrize(("what", "data"), VALID, ids=[what for what, _ in VALID])
def test_valid_files_read_as_the_library_reads_them(what, data, scratch):
    result = safetensors_fuzz.compare(data, scratch)
    assert result.library.accepted, result.library.message
    assert result.parser.accepted, result.parser.message
    assert result.failure is None, result.failure


def test_the_valid_corpus_has_every_dtype_scalars_zero_sizes_metadata_and_odd_names():
    headers = [parse_bytes(data) for _, data in VALID]
    tensors = [info for header in headers for info in header]
    assert {info.dtype for info in tensors} == set(DTYPE_BITS)
    assert {info.dtype for info in tensors if info.shape == ()} >= set(DTYPE_BITS) - {"F4", "F6_E2M3", "F6_E3M2"}
    assert any(0 in info.shape and max(info.shape) >= 2**40 for info in tensors)
    assert any(len(header.metadata) >= 50 for header in headers)
    assert {"", "\x00", '"', "\\", "😀", "a\nb"} <= {info.name for info in tensors}
    assert any(len(header) == 0 for header in headers)


@pytest.mark.parametrize(("what", "rule", "data"), MALFORMED, ids=[what for what, _, _ in MALFORMED])
def test_malformed_files_are_rejected_by_both_naming_the_rule(what, rule, data, scratch):
    result = safetensors_fuzz.compare(data, scratch)
    assert not result.library.accepted, "the library accepts this file: it does not belong in the malformed corpus"
    assert result.failure is None, result.failure
    assert result.parser.rule == rule, result.parser.message
    assert result.parser.message.startswith(f"{rule}: ") and not result.stricter


def test_the_malformed_corpus_breaks_every_rule():
    assert {rule for _, rule, _ in MALFORMED} == set(RULES)


@pytest.mark.parametrize(("what", "rule", "data"), STRICTER, ids=[what for what, _, _ in STRICTER])
def test_the_parser_is_stricter_on_purpose_and_says_so(what, rule, data, scratch):
    result = safetensors_fuzz.compare(data, scratch)
    assert result.library.accepted, result.library.message
    assert result.failure is None, result.failure
    assert result.parser.rule == rule and result.stricter, result.parser.message


def test_a_repeated_metadata_key_is_not_called_a_repeated_tensor_name():
    (message,) = [str(exc) for _, _, data in STRICTER if b'"k":"1","k":"2"' in data for exc in _raised(data)]
    assert message.startswith("metadata: the metadata key 'k' appears twice")
    assert "tensor name" not in message and "'a'" not in message


def _raised(data: bytes) -> list[Exception]:
    try:
        parse_bytes(data)
    except safetensors_io.SafetensorsFormatError as exc:
        return [exc]
    return []


def test_every_rule_is_documented_for_students_and_instructors():
    documented = safetensors_io.__doc__ + "".join(RULES.values())
    assert all(rule for rule in RULES) and "stricter" in documented
    text = (Path(safetensors_io.__file__).parents[2] / "docs" / "safetensors_rules.md").read_text("utf-8")
    assert all(f"`{rule}`" in text for rule in RULES), "docs/safetensors_rules.md misses a rule"
    prose = " ".join(text.split())
    assert f"takes more than {safetensors_fuzz.TIME_LIMIT:g} seconds" in prose
    assert f"stopped after {safetensors_fuzz.HANG_LIMIT:g}: a hang" in prose
    assert f"allocates more than {safetensors_fuzz.MEMORY_FACTOR} times the input's size" in prose


def test_the_damage_table_of_notebook_01_agrees_with_the_library(scratch):
    for what, data in safetensors_io.damaged_variants(VALID[0][1]):
        result = safetensors_fuzz.compare(data, scratch)
        assert result.failure is None and not result.parser.accepted, (what, result)


@pytest.mark.parametrize("path", REGRESSIONS, ids=[path.stem for path in REGRESSIONS])
def test_inputs_that_once_failed_still_agree(path, scratch):
    result = safetensors_fuzz.compare(path.read_bytes(), scratch)
    assert result.failure is None, result.failure


def test_regressions_are_kept_small():
    assert REGRESSIONS, f"no regression inputs in {safetensors_fuzz.REGRESSIONS}"
    assert all(path.stat().st_size <= 16_384 for path in REGRESSIONS)


# --- the judge itself can fail ------------------------------------------------------------------------------------


def _broken(monkeypatch, parse) -> None:
    monkeypatch.setattr(safetensors_fuzz, "parse_bytes", parse)


def test_compare_catches_a_parser_that_accepts_what_the_library_rejects(monkeypatch, scratch):
    valid = VALID[0][1]
    _broken(monkeypatch, lambda data: parse_bytes(valid))
    result = safetensors_fuzz.compare(MALFORMED[0][2], scratch)
    assert result.failure.problem == "accepted a file the library rejects"


def test_compare_catches_crashes_hangs_allocations_and_false_claims(monkeypatch, scratch):
    def crash(data):
        raise TypeError("unsupported operand")

    _broken(monkeypatch, crash)
    assert "raised TypeError" in safetensors_fuzz.compare(b"x", scratch).failure.problem

    def allocate(data):
        blob = bytearray(64 << 20)  # what a parser that believed a forged length would do
        raise safetensors_io.SafetensorsFormatError(f"layout: {len(blob)}", "layout")

    _broken(monkeypatch, allocate)
    assert "allocated" in safetensors_fuzz.compare(MALFORMED[0][2], scratch).failure.problem

    def claims(data):
        raise safetensors_io.SafetensorsFormatError("layout: no; " + safetensors_fuzz.STRICTER_WORDS, "layout")

    _broken(monkeypatch, claims)
    assert "claims to be stricter" in safetensors_fuzz.compare(MALFORMED[0][2], scratch).failure.problem
    assert safetensors_fuzz.compare(VALID[0][1], scratch).failure is None  # a stricter refusal of a valid file

    def plain(data):
        raise safetensors_io.SafetensorsFormatError("layout: no", "layout")

    _broken(monkeypatch, plain)
    assert safetensors_fuzz.compare(VALID[0][1], scratch).failure.problem == "rejected a file the library accepts"

    def unnamed(data):
        raise safetensors_io.SafetensorsFormatError("no rule here")

    _broken(monkeypatch, unnamed)
    assert "names no rule" in safetensors_fuzz.compare(MALFORMED[0][2], scratch).failure.problem
    monkeypatch.setattr(safetensors_fuzz, "parse_bytes", parse_bytes)
    monkeypatch.setattr(safetensors_fuzz, "TIME_LIMIT", 0.0)
    assert "took" in safetensors_fuzz.compare(VALID[0][1], scratch).failure.problem

    def hang(data):
        while True:
            pass

    _broken(monkeypatch, hang)
    monkeypatch.setattr(safetensors_fuzz, "HANG_LIMIT", 0.5)
    assert "it hangs" in safetensors_fuzz.compare(VALID[0][1], scratch).failure.problem


def test_the_fuzzer_finds_a_known_bug(monkeypatch):
    """The old parser counted the bytes of a shape with a 0 in it as 0, whatever overflowed before the 0."""
    real = safetensors_io._byte_count
    monkeypatch.setattr(
        safetensors_io, "_byte_count", lambda where, dtype, shape: 0 if 0 in shape else real(where, dtype, shape)
    )
    report = safetensors_fuzz.fuzz(60, seed=0, max_inputs=4000)
    assert any(failure.problem == "accepted a file the library rejects" for failure in report.failures), (
        report.summary()
    )


def test_the_same_seed_gives_the_same_inputs():
    first, second = safetensors_fuzz.mutation_inputs(3), safetensors_fuzz.mutation_inputs(3)
    assert [next(first) for _ in range(50)] == [next(second) for _ in range(50)]


# --- the fuzz run -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_fixed_seed_fuzz_run_finds_no_disagreement(tmp_path):
    report = safetensors_fuzz.fuzz(FUZZ_SECONDS, seed=0, keep=tmp_path)
    print(report.summary())
    assert not report.failures, (
        f"{report.summary()}\nfirst: {report.failures[0]}; the failing inputs are in {tmp_path}: copy them into "
        f"{safetensors_fuzz.REGRESSIONS} to keep them as regression cases"
    )
    # The run reached both sides of the library's verdict and every rule, or it proved little.
    assert report.library_accepted >= report.inputs // 20 and report.parser_stricter, report.summary()
    assert set(report.rules) >= set(RULES), report.summary()
