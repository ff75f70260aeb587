"""Fuzz the hand safetensors parser against the safetensors library for longer than CI does.

    python scripts/fuzz_safetensors.py --seconds 600          # seed 0, ten minutes
    python scripts/fuzz_safetensors.py --seconds 3600 --seed 7

Every input on which the parser and the library disagree (or the parser crashes, hangs or over-allocates) is kept
in tests/data/safetensors/regressions/, which tests/test_safetensors_differential.py replays; the exit status is
1 when there was any. The rules and the judge are described in docs/safetensors_rules.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_utils.storage import safetensors_fuzz  # noqa: E402 - after the path is set


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzer with the given time, seed and folder for failing inputs; print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz (default 60)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mutations (default 0, as in CI)")
    parser.add_argument("--keep", type=Path, default=safetensors_fuzz.REGRESSIONS,
                        help="folder for failing inputs (default: the regression cases the tests replay)")
    args = parser.parse_args(argv)
    report = safetensors_fuzz.fuzz(args.seconds, args.seed, keep=args.keep, log=print)
    print(report.summary())
    if report.failures:
        print(f"kept {len(report.failures)} failing input(s) in {args.keep}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
