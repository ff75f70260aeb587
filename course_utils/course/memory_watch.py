"""The memory of a submission as a whole: every process it started, summed, and stopped past a limit.

The sandbox's resource limits are per process (address space), and a submission may start hundreds of processes,
so nothing there bounds their total. :class:`MemoryWatch` does: a thread that sums the resident memory (RSS) of a
process and all its descendants every :data:`INTERVAL` seconds, remembers the peak and, past the limit, kills the
whole tree and says so. cgroup v2's ``memory.max`` would do it in the kernel, but it needs the memory controller in
the unified hierarchy and a writable cgroup, which a grader often lacks (a container whose memory controller is
still cgroup v1, a non-root instructor); the watch works wherever psutil does.

RSS counts shared pages (the libraries every Python process maps) once per process, so the sum is an upper bound;
an allocation faster than the sampling interval can overshoot the limit for that long, within the per-process one.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

INTERVAL = 0.2  # seconds between two samples


def tree_rss(pid: int) -> int:
    """Resident bytes of process ``pid`` and every process it started (0 once it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):  # it may end between the listing and the reading
            total += process.memory_info().rss
    return total


@dataclass
class MemoryWatch:
    """Watches one process tree against ``limit_bytes`` (all processes together) until it ends.

    After :meth:`stop`, ``peak_bytes`` is the largest sum seen and ``exceeded`` whether the tree was killed for it.
    """

    limit_bytes: int
    interval: float = INTERVAL
    peak_bytes: int = 0
    exceeded: bool = False
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self, process: subprocess.Popen, kill: Callable[[subprocess.Popen], None]) -> None:
        """Sample ``process``'s tree in a thread; past the limit call ``kill(process)`` once."""

        def sample() -> None:
            while not self._done.is_set() and process.poll() is None:
                used = tree_rss(process.pid)
                self.peak_bytes = max(self.peak_bytes, used)
                if used > self.limit_bytes:
                    self.exceeded = True
                    kill(process)
                    return
                self._done.wait(self.interval)

        self._thread = threading.Thread(target=sample, name="memory-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the sampling (the process has ended or been killed)."""
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def reason(self) -> str:
        """The sentence for the feedback when the watch stopped the submission."""
        return (f"all its processes together used more than {size_text(self.limit_bytes)} of memory, the limit "
                "for a whole submission, so the grader stopped them: free what you no longer need (del, smaller "
                "batches or models), or do the work in smaller pieces")


def size_text(count: int) -> str:
    """``count`` bytes in GiB or MiB, as the sandbox's limits are written."""
    return f"{count / 2**30:g} GiB" if count >= 2**30 else f"{count / 2**20:g} MiB"
