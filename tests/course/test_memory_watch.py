"""The memory of a process tree as a whole: summed, remembered at its peak, and stopped past the limit."""

from __future__ import annotations

import subprocess
import sys

from course_utils.course import exercises, memory_watch
from course_utils.course.memory_watch import MemoryWatch

# A parent that starts two children of 150 MiB each, then waits: every process small, the tree not.
TREE = """\
import subprocess, sys, time
child = "block = bytearray(150 * 2**20); import time; time.sleep(30)"
children = [subprocess.Popen([sys.executable, "-c", child]) for _ in range(2)]
time.sleep(30)
"""


def _start(source: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", source], start_new_session=True)


def test_a_tree_within_the_limit_runs_to_its_end():
    process = _start("block = bytearray(50 * 2**20); import time; time.sleep(1)")
    watch = MemoryWatch(2**30)
    assert not exercises.wait_or_kill(process, 60, watch)
    assert process.returncode == 0 and not watch.exceeded
    assert 50 * 2**20 < watch.peak_bytes < watch.limit_bytes


def test_a_tree_past_the_limit_is_killed_whole_and_the_reason_says_so():
    process = _start(TREE)
    watch = MemoryWatch(250 * 2**20)
    assert not exercises.wait_or_kill(process, 25, watch)  # stopped long before its 30 s sleep ended
    assert watch.exceeded and process.returncode is not None
    assert watch.peak_bytes > 250 * 2**20
    assert memory_watch.tree_rss(process.pid) == 0  # nothing of it is left
    assert watch.reason().startswith("all its processes together used more than 250 MiB of memory")


def test_sizes_read_as_the_sandbox_writes_them():
    assert memory_watch.size_text(4 * 2**30) == "4 GiB" and memory_watch.size_text(600 * 2**20) == "600 MiB"
