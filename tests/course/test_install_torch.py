"""course_utils.course.install_torch: the CPU build from PyTorch's index where it answers, and what the default gives."""

from __future__ import annotations

import sys

from course_utils.course import install_torch


def test_torch_comes_from_the_cpu_index_on_linux_when_it_answers():
    commands, what = install_torch.plan("Linux", True, "constraints/ci-cpu.txt")
    assert commands[0][-2:] == ["--extra-index-url", install_torch.CPU_INDEX]
    assert "-c" in commands[0] and commands[1] == commands[0][:-2]  # the fallback: the default index
    assert "CPU build" in what


def test_without_the_cpu_index_linux_says_what_the_default_index_gives():
    commands, what = install_torch.plan("Linux", False, None)
    assert len(commands) == 1 and install_torch.CPU_INDEX not in commands[0]
    assert "CUDA build of several GB" in what and "local CPU wheel" in what


def test_macos_takes_the_default_index():
    commands, what = install_torch.plan("Darwin", True, None)
    assert commands == [[sys.executable, "-m", "pip", "install", "--quiet", "torch"]] and "MPS" in what


def test_an_unreachable_index_is_detected_quickly():
    assert install_torch.index_reachable("http://127.0.0.1:9", timeout=2) is False
