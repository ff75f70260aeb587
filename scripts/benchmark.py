"""Time a fresh clone's install, `make test` and `make run` against the workbook's time goals; write them into README.md.

    python scripts/benchmark.py            # clone HEAD into a temporary folder and measure there

A benchmark, not a test: the numbers depend on the machine, so they are measured here and written with it. Run it on
a quiet machine: on a shared one the times say more about the neighbours than about the workbook.

The goals (two cores, tiny profile): `make test` under 600 s, `make run` under 180 s, each notebook under 60 s.
`make test` executes every notebook once, under nbval; a JUnit report of that same run gives each notebook's share
(its cells' time on a pytest worker), beside its time alone in `make run`.
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
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- BENCHMARK:START -->", "<!-- BENCHMARK:END -->"
GOALS = {"test": 600.0, "run": 180.0, "notebook": 60.0}  # seconds, on two cores


def timed(command: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run ``command`` with its output in ``log``; return (seconds, exit status, last lines of output)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, **(env or {})})
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


def verdict(seconds: float, goal: float | None) -> str:
    """Whether ``seconds`` meets ``goal``, and by how much it misses."""
    if goal is None:
        return ""
    return f"met (under {goal:.0f} s)" if seconds < goal else f"**not met**: {seconds - goal:.0f} s over {goal:.0f} s"


def nbval_seconds(junit: Path) -> dict[str, float]:
    """Each notebook's time under nbval in `make test` (setup, cells and teardown), from pytest's JUnit report."""
    seconds: dict[str, float] = defaultdict(float)
    if not junit.exists():
        return {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        match = re.search(r"([\w-]+)\.ipynb", case.get("classname", "") + " " + case.get("name", ""))
        if match:
            seconds[match.group(1)] += float(case.get("time", 0))
    return dict(seconds)


def table(rows: list[tuple[str, float, int, float | None]]) -> list[str]:
    lines = ["| step | seconds | status | goal |", "| --- | ---: | --- | --- |"]
    lines += [f"| {label} | {seconds:.0f} | {'ok' if status == 0 else f'exit {status}'} | {verdict(seconds, goal)} |"
              for label, seconds, status, goal in rows]
    return lines


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "llm-workbook"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        junit = clone / "build" / "benchmark-junit.xml"
        steps = (
            ("install (`make setup`, fresh clone)", "setup", ["make", "setup"], {}, None),
            ("`make test` (ruff, tests, each notebook once under nbval)", "test", ["make", "test"],
             {"PYTEST_ADDOPTS": f"--junitxml={junit}"}, GOALS["test"]),
            ("`make run` (each notebook with papermill)", "run", ["make", "run"], {}, GOALS["run"]),
        )
        rows = []
        for label, name, command, env, goal in steps:
            print(f"timing {label} ...", flush=True)
            seconds, status, tail = timed(command, clone, ROOT / "build" / f"benchmark-{name}.log", env)
            rows.append((label, seconds, status, goal))
            if status != 0:
                print(tail, file=sys.stderr)
        summary = json.loads((clone / "build" / "summary.json").read_text())
        under_nbval = nbval_seconds(junit)
    write_readme(render(f"Measured by `scripts/benchmark.py` on {machine()}, {time.strftime('%Y-%m-%d')}:", rows,
                        summary["results"], under_nbval))
    ok = all(status == 0 for _, _, status, _ in rows)
    return 0 if ok else 1


def render(header: str, rows: list[tuple[str, float, int, float | None]], notebooks: list[dict],
           under_nbval: dict[str, float]) -> str:
    """The README's benchmark block: the steps against their goals, then each notebook."""
    lines = [START, header, "", *table(rows), "",
             "Each notebook on the tiny profile: alone in `make run`, and its share of `make test` (nbval, on one of "
             "two pytest workers beside the other tests):", "",
             "| notebook | `make run` seconds | status | under nbval in `make test` | goal |",
             "| --- | ---: | --- | ---: | --- |"]
    for result in notebooks:
        stem = Path(result["notebook"]).stem
        nbval = f"{under_nbval[stem]:.0f}" if stem in under_nbval else "not measured"
        lines.append(f"| {stem} | {result['seconds']:.0f} | {result['status']} | {nbval} | "
                     f"{verdict(result['seconds'], GOALS['notebook'])} |")
    return "\n".join([*lines, END])


def write_readme(block: str) -> None:
    """Put ``block`` between the README's benchmark markers."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    readme.write_text(text)
    print(block)


if __name__ == "__main__":
    sys.exit(main())
