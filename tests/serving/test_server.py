"""course_utils.serving.server: the server is up inside the block and no process survives it, even on an error."""

import os
import sys
import urllib.request

import pytest

from course_utils.serving import server


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead but not yet reaped
        return stat.read().split()[2] != "Z"


def _children():
    return {int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(p) == os.getpid()}


def _parent(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def test_no_process_survives_the_block_even_when_it_raises(tmp_path):
    port = server.free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    before = _children()
    with pytest.raises(KeyError), server.running_server(command, port) as url:
        assert urllib.request.urlopen(url, timeout=5).status == 200
        started = _children() - before
        assert len(started) == 1
        raise KeyError("the notebook's code failed inside the block")
    assert not any(_alive(pid) for pid in started)
    assert not server._listening(port)


def test_a_server_that_dies_is_reported():
    port = server.free_port()
    with pytest.raises(RuntimeError, match="exited"), \
            server.running_server([sys.executable, "-c", "raise SystemExit(3)"], port):
        pass


def test_llama_cpp_command_listens_on_loopback_only():
    command = server.llama_cpp_server_command("m.gguf", 1234)
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert server.llama_cpp_server_available()[0] in (True, False)
