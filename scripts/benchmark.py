"""Time a fresh clone's install, `make test` and `make run`, and write the result into README.md.

    python scripts/benchmark.py            # clone HEAD into a temporary folder and measure there

A benchmark, not a test: the numbers depend on the machine, so they are measured here and written with it.
In the same sitting it also times the test command as it was before notebooks ran once (papermill in
tests/test_notebooks.py and nbval over solutions/ again), so the two figures compare like with like.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- BENCHMARK:START -->", "<!-- BENCHMARK:END -->"


def timed(command: list[str], cwd: Path, log: Path) -> tuple[float, int, str]:
    """Run ``command`` with its output in ``log``; return (seconds, exit status, last lines of output)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, text=True)
    tail = "\n".join(log.read_text().strip().splitlines()[-15:])
    return time.perf_counter() - started, proc.returncode, tail


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
        cpu = model
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB RAM, Python {platform.python_version()}, no GPU"


# `make test` before it executed each notebook once: the same suite plus nbval re-executing every solution notebook.
BEFORE_TEST = ("OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python -m pytest -n 2 --dist loadscope --nbval-lax "
               "tests solutions")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "llm-workbook"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        rows = []
        steps = (
            ("install (`make setup`, fresh clone)", "setup", ["make", "setup"]),
            ("`make test` (each notebook executed once)", "test", ["make", "test"]),
            ("before: `make test` with nbval as well (each notebook executed twice)", "test-before",
             ["bash", "-c", f".venv/bin/python -m pip install --quiet 'nbval>=0.11' && make test PYTEST_ALL='{BEFORE_TEST}'"]),
            ("`make run`", "run", ["make", "run"]),
        )
        for label, name, command in steps:
            print(f"timing {label} ...", flush=True)
            seconds, status, tail = timed(command, clone, ROOT / "build" / f"benchmark-{name}.log")
            rows.append((label, seconds, status))
            if status != 0:
                print(tail, file=sys.stderr)
        summary = json.loads((clone / "build" / "summary.json").read_text())
    notebooks = summary["results"]
    lines = [START, f"Measured by `scripts/benchmark.py` on {machine()}, {time.strftime('%Y-%m-%d')}:", "",
             "| step | seconds | status |", "| --- | ---: | --- |"]
    lines += [f"| {label} | {seconds:.0f} | {'ok' if status == 0 else f'exit {status}'} |"
              for label, seconds, status in rows]
    lines += ["", "`make run`, per notebook (tiny profile):", "", "| notebook | seconds | status |",
              "| --- | ---: | --- |"]
    lines += [f"| {Path(r['notebook']).stem} | {r['seconds']:.0f} | {r['status']} |" for r in notebooks]
    lines.append(END)
    readme = ROOT / "README.md"
    text = readme.read_text()
    text = re.sub(re.escape(START) + ".*?" + re.escape(END), "\n".join(lines), text, flags=re.S)
    readme.write_text(text)
    print("\n".join(lines))
    return 0 if all(status == 0 for _, _, status in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
