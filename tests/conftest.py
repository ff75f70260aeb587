"""Every test runs offline, on the CPU, without windows: as CI does."""

import os
import sys

import pytest

# sandbox_required: the `sandbox` marker (skipped without bubblewrap, required in CI); pytester: tests of plugins.
pytest_plugins = ["sandbox_required", "pytester"]

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# pytest-timeout's limit for a test marked slow (notebook runs, training, the data rebuild); pyproject.toml's
# `timeout` is the others'.
SLOW_TEST_TIMEOUT = 1800


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TEST_TIMEOUT))


@pytest.fixture(scope="module", params=["packed", "generic"])
def bnb_cpu_kernel(request):
    """Runs a test with each of bitsandbytes' 4-bit CPU kernels: the packed AVX-512 BF16 one and the generic one.

    bitsandbytes chooses by CPU (``has_avx512bf16()``) when a ``Linear4bit`` is made, so a test that only ran the
    host's choice would miss the other CPU's failures. Here the choice is forced for every layer made inside the
    test. The packed kernel is registered only where the CPU has the instructions: elsewhere it is skipped, with
    the reason.
    """
    import bitsandbytes.nn.modules as bnb_modules

    from course_utils.finetuning import quant

    packed = request.param == "packed"
    available, reason = quant.bnb_packed_cpu_kernel()
    if packed and not available:
        pytest.skip(f"bitsandbytes' packed 4-bit CPU kernel not run: {reason}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bnb_modules, "has_avx512bf16", lambda: packed)
        yield request.param


@pytest.fixture(scope="session")
def load_script():
    """Import a file of scripts/ as a module by its name: ``load_script("gpu_check")``."""
    import importlib.util

    from course_utils.ground import paths

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, paths.REPO_ROOT / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there while the file executes
        spec.loader.exec_module(module)
        return module

    return load

# Notebooks under tests/ are fixtures the tests read, not notebooks for nbval to run (`make test` runs solutions/).
collect_ignore_glob = ["*.ipynb"]


@pytest.fixture
def no_gpu(monkeypatch):
    """No CUDA and no MPS, whatever this machine has: the device and precision rules take their CPU branch."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_built", lambda: False)
