"""A real server on the loopback address, started and always stopped by a context manager, and a load generator.

:func:`running_server` starts a command that listens on ``127.0.0.1:port`` in its own process group, waits until
the port answers (or the process dies, whose last output is then shown), yields the base URL, and on leaving,
whatever happened inside, stops the whole group: SIGTERM, then SIGKILL after a grace period. No process survives.

The server here is llama.cpp's OpenAI-compatible one (``llama_cpp.server``, from llama-cpp-python with
its ``[server]`` extra) on a GGUF file the workbook wrote. :func:`load_test` sends requests (the notebook's own call
of the ``openai`` client) with a bounded number in flight at once, as a client pool of a real service would, and
times each.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SERVER_MODULES = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def llama_cpp_server_available() -> tuple[bool, str]:
    """Whether ``python -m llama_cpp.server`` can start here, and if not, what is missing."""
    missing = [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        return False, (f"llama.cpp's server was not run: {', '.join(missing)} not installed "
                       "(pip install 'llama-cpp-python[server]')")
    return True, "llama.cpp's OpenAI-compatible server (llama_cpp.server)"


# ``python -m llama_cpp.server``, with the model loaded without llama.cpp's weight repacking: its AMX kernels crash on
# the tiny models' Q8_0 matrices (see course_utils.serving.llama_cpp_run.without_weight_repacking).
LLAMA_CPP_SERVER = ("import runpy\n"
                    "from course_utils.serving.llama_cpp_run import without_weight_repacking\n"
                    "with without_weight_repacking():\n"
                    "    runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)\n")


def llama_cpp_server_command(gguf: str | Path, port: int, *, n_ctx: int = 256) -> list[str]:
    """The command line of llama.cpp's OpenAI-compatible server on ``gguf``, on the loopback address only."""
    return [sys.executable, "-c", LLAMA_CPP_SERVER, "--model", str(gguf), "--host", "127.0.0.1",
            "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(min(os.cpu_count() or 1, 2))]


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def stop(process: subprocess.Popen, grace_s: float = 5.0) -> None:
    """Stop the process and its group: SIGTERM, then SIGKILL after ``grace_s``."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def running_server(command: Sequence[str], port: int, *, ready_timeout_s: float = 60.0,
                   log: str | Path | None = None) -> Iterator[str]:
    """Run ``command`` (a server on ``127.0.0.1:port``) for the ``with`` block; its base URL. Always stopped."""
    log_path = Path(log) if log else Path(os.devnull)
    with open(log_path, "wb") as out:
        process = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while not _listening(port):
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:] if log else ""
                raise RuntimeError(f"the server exited with status {process.returncode} before listening. {tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not listen on port {port} within {ready_timeout_s:.0f} s")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def load_test(send: Callable[[str, int], int], prompts: Sequence[str], max_tokens: Sequence[int],
              concurrency: int) -> dict[str, float]:
    """Call ``send(prompt, max_tokens)`` (one request; it returns the completion tokens) for every prompt, at most
    ``concurrency`` in flight at once: latency percentiles and tokens/s over the run."""
    from course_utils.serving.workload import percentile

    def timed(args: tuple[str, int]) -> tuple[float, int]:
        begin = time.perf_counter()
        tokens = send(*args)
        return time.perf_counter() - begin, tokens

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(timed, zip(prompts, max_tokens)))
    span = time.perf_counter() - start
    latencies = [seconds for seconds, _ in results]
    return {"concurrency": concurrency, "requests": len(results), "latency p50": percentile(latencies, 50),
            "latency p95": percentile(latencies, 95), "tokens/s": sum(n for _, n in results) / span}
