"""Makes every Python process (notebook kernels included) run bitsandbytes' generic 4-bit CPU kernel, as a CPU
without AVX-512 BF16 does. Used by ``make test-other-cpu`` through PYTHONPATH; never installed.

bitsandbytes reads ``has_avx512bf16()`` into each ``Linear4bit`` when it is made; the finder below replaces that
function in ``bitsandbytes.nn.modules`` as soon as the module is imported, before any layer exists.
"""

import importlib.abc
import importlib.util
import sys

TARGET = "bitsandbytes.nn.modules"


class _GenericBnbKernel(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            module.has_avx512bf16 = lambda: False

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _GenericBnbKernel())
