"""course_utils.serving.server: the server is up inside the block and no process survives it, even on an error."""

import os
import sys
import time
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


STUB = '''
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Completions(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(0.05)  # a request takes a while, so that concurrency shows in the span
        answer = {"id": "c", "object": "text_completion", "created": 0, "model": body["model"],
                  "choices": [{"index": 0, "text": " x" * body["max_tokens"], "finish_reason": "length"}],
                  "usage": {"prompt_tokens": 1, "completion_tokens": body["max_tokens"],
                            "total_tokens": 1 + body["max_tokens"]}}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Completions).serve_forever()
'''


def test_load_test_with_the_openai_client_on_an_openai_compatible_stub(tmp_path):
    from openai import OpenAI

    script = tmp_path / "stub_server.py"
    script.write_text(STUB)
    port = server.free_port()
    with server.running_server([sys.executable, str(script), str(port)], port) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0)

        def send(prompt, max_tokens):
            answer = client.completions.create(model="m", prompt=prompt, max_tokens=max_tokens, temperature=0)
            return answer.usage.completion_tokens

        result = server.load_test(send, ["a", "b", "c", "d"], [1, 2, 3, 4], concurrency=4)
    assert result["requests"] == 4 and result["concurrency"] == 4
    assert 0.05 <= result["latency p50"] <= result["latency p95"]
    assert 0 < result["tokens/s"] <= 10 / 0.05  # 10 tokens, at best all four at once in one 0.05 s span
    assert not server._listening(port)


def test_load_test_keeps_at_most_concurrency_requests_in_flight():
    import threading

    lock, state = threading.Lock(), {"now": 0, "most": 0}

    def send(prompt, max_tokens):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.02)
        with lock:
            state["now"] -= 1
        return max_tokens

    result = server.load_test(send, ["p"] * 9, [2] * 9, concurrency=3)
    assert state["most"] == 3 and result["requests"] == 9


@pytest.mark.skipif(not server.llama_cpp_server_available()[0], reason="llama.cpp's server is not installed")
def test_llama_cpp_serves_the_workbooks_q8_0_file_through_the_openai_client(tmp_path):
    from openai import OpenAI
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from course_utils.ground import paths
    from course_utils.storage import gguf_io

    folder = paths.data_dir() / "models" / "tiny-llama"
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    gguf = gguf_io.write_gguf(model, tokenizer, tmp_path / "tiny-q8_0.gguf", "q8_0")  # the file that crashed it
    port = server.free_port()
    with server.running_server(server.llama_cpp_server_command(gguf.path, port), port) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0)
        answers = [client.completions.create(model="m", prompt=p, max_tokens=3, temperature=0)
                   for p in ("Once upon a time", "The cat")]
    assert all(1 <= a.usage.completion_tokens <= 3 for a in answers)
    assert not server._listening(port)
