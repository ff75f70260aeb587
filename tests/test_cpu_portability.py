"""The same figures on every CPU: torch's kernels for a lower CPU capability, other thread counts and bitsandbytes'
other 4-bit CPU kernel give the same logits, greedy tokens and losses as the host, within tolerances that follow
from the number formats.

Each variant runs ``tests/probes/cpu_figures.py`` in a fresh process: ``ATEN_CPU_CAPABILITY`` makes torch dispatch to
the kernels of an older CPU (``default`` is its plain C++ path, what a CPU without AVX2 or an unusual Arm core runs),
``OMP_NUM_THREADS`` changes how reductions are split, and the generic bitsandbytes kernel is what CPUs without
AVX-512 BF16 run. A variant the host cannot run is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import torch

PROBE = Path(__file__).parent / "probes" / "cpu_figures.py"
# fp32 logits: another summation order or vector width changes the last bits (relative to the largest logit).
FP32_TOLERANCE = 1e-4
# 4-bit logits: the packed kernel rounds activations to bf16 (2^-8 relative per rounding, over the layers), and
# how its threads split the work changes which bf16 roundings happen (measured here: 0.004 between 1 and 2
# threads). The generic kernel computes in fp32.
NF4_TOLERANCE = {"fp32 only": 1e-4, "bf16 involved": 2e-2}


def _nf4_tolerance(*runs: dict) -> float:
    from course_utils.finetuning import quant

    generic = all(run["bnb_kernel"] == quant.GENERIC_CPU_KERNEL for run in runs)
    return NF4_TOLERANCE["fp32 only" if generic else "bf16 involved"]


@cache
def probe(**settings: str) -> dict:
    # Two threads unless a variant says otherwise: `make test` runs with one (OMP and MKL), which torch would inherit.
    threads = settings.pop("threads", "2")
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, **settings}
    result = subprocess.run([sys.executable, str(PROBE)], capture_output=True, text=True, env=env, timeout=600,
                            cwd=PROBE.parents[2])
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def _relative(a: list[float], b: list[float]) -> float:
    a, b = torch.tensor(a), torch.tensor(b)
    return ((a - b).abs().max() / b.abs().max()).item()


def _compare(variant: dict, host: dict, nf4_tolerance: float) -> None:
    assert _relative(variant["logits"], host["logits"]) < FP32_TOLERANCE
    assert variant["greedy"] == host["greedy"]
    assert _relative(variant["nf4_logits"], host["nf4_logits"]) < nf4_tolerance
    assert variant["train_losses"] == pytest.approx(host["train_losses"], rel=FP32_TOLERANCE)


@pytest.mark.slow
def test_the_plain_cpu_kernels_give_the_hosts_figures():
    host, plain = probe(), probe(ATEN_CPU_CAPABILITY="default")
    if host["capability"] == "DEFAULT":
        pytest.skip("the host already runs torch's plain kernels: nothing else to compare with")
    assert plain["capability"] == "DEFAULT"
    _compare(plain, host, _nf4_tolerance(plain, host))


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: no other thread count to compare with")
def test_one_thread_gives_the_figures_of_two():
    one, two = probe(threads="1"), probe()
    assert (one["threads"], two["threads"]) == (1, 2)
    _compare(one, two, _nf4_tolerance(one, two))


@pytest.mark.slow
def test_the_generic_4bit_kernel_gives_the_packed_kernels_figures():
    from course_utils.finetuning import quant

    available, reason = quant.bnb_packed_cpu_kernel()
    if not available:
        pytest.skip(f"only the generic kernel runs here ({reason}): the packed one is compared on AVX-512 BF16 CPUs")
    host, generic = probe(), probe(PROBE_BNB_KERNEL="generic")
    assert host["bnb_kernel"] == quant.PACKED_CPU_KERNEL and generic["bnb_kernel"] == quant.GENERIC_CPU_KERNEL
    _compare(generic, host, _nf4_tolerance(generic, host))
