"""Install torch for a CPU set-up (``make setup`` runs ``python -m course_utils.course.install_torch``), standard library only.

From PyPI, Linux torch is a CUDA build of several GB; PyTorch's own CPU index has the CPU build (a few hundred
MB). So on Linux torch comes from that index when it answers, and from the default index when it does not (then the
user gets whatever pip's configuration finds: the CUDA build from PyPI, or a local CPU wheel where an environment
provides one, as this workbook's CI does). On macOS and Windows, PyPI's build is already the CPU (and MPS) build.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import urllib.error
import urllib.request

CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def index_reachable(url: str = CPU_INDEX, timeout: float = 5.0) -> bool:
    """Whether a package index answers within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(f"{url}/torch/", timeout=timeout) as response:  # noqa: S310 - fixed https URL
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def plan(system: str, reachable: bool, constraints: str | None) -> tuple[list[list[str]], str]:
    """The pip argument lists to try in turn, and a sentence saying what the user gets."""
    pip = [sys.executable, "-m", "pip", "install", "--quiet", *(["-c", constraints] if constraints else []), "torch"]
    if system != "Linux":
        return [pip], f"torch from the default index: on {system} that is the CPU build (with MPS on Apple silicon)."
    if reachable:
        # An extra index, so that pip's own configuration (a mirror, a cache) still serves torch's dependencies;
        # for the same release the CPU index's local version (2.13.0+cpu) sorts above PyPI's 2.13.0, so it wins.
        return ([[*pip, "--extra-index-url", CPU_INDEX], pip],
                f"torch's CPU build from PyTorch's CPU index ({CPU_INDEX}); if that fails, from the default index.")
    return [pip], (f"PyTorch's CPU index ({CPU_INDEX}) did not answer: torch from the default index instead. From "
                   "plain PyPI that is a CUDA build of several GB (it runs on a CPU too); a pip configuration that "
                   "provides a local CPU wheel (as CI's does) gives that one.")


def installed_build(python: str = sys.executable) -> str:
    """``torch 2.13.0+cpu (CPU build)`` or ``... (CUDA 12.8 build)``, as the installed torch reports itself."""
    code = ("import torch; print(torch.__version__, "
            "f'(CUDA {torch.version.cuda} build)' if torch.version.cuda else '(CPU build)')")
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    return f"torch {result.stdout.strip()}" if result.returncode == 0 else "torch did not import"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--constraints", "-c", default=None, help="a pip constraints file pinning torch")
    args = parser.parse_args(argv)
    system = platform.system()
    commands, what = plan(system, system == "Linux" and index_reachable(), args.constraints)
    print(f"install_torch: {what}", flush=True)
    for command in commands:
        if subprocess.run(command, check=False).returncode == 0:
            print(f"install_torch: installed {installed_build()}", flush=True)
            return 0
        print("install_torch: that failed; trying the next source", flush=True)
    print("install_torch: torch could not be installed; see pip's messages above.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
