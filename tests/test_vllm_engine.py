"""--engine vllm without a vLLM: what a user who points it at the wrong place is told.

The engine against a real vLLM server is in test_vllm.py (slow tier); these need no server.
"""

from __future__ import annotations

import functools
import http.server
import threading

import pytest

from conftest import cli, free_port


@pytest.fixture
def not_vllm(tmp_path):
    """A web server on loopback that is not vLLM (it serves an empty folder)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # stderr is what the test reads
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def one_line(res) -> str:
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error:"), res.stderr
    return res.stderr


def test_a_server_that_is_not_vllm_is_one_line(not_vllm, photos):
    res = cli("assess", str(photos[0]), "--engine", "vllm", "--base-url", not_vllm, "-m", "m")
    assert "is it a vLLM server?" in one_line(res)


def test_no_server_at_all_is_one_line(photos):
    url = f"http://127.0.0.1:{free_port()}/v1"
    res = cli("assess", str(photos[0]), "--engine", "vllm", "--base-url", url, "-m", "m")
    assert "cannot reach" in one_line(res)


def test_the_vllm_engine_needs_a_base_url_and_takes_no_local_options(photos):
    res = cli("assess", str(photos[0]), "--engine", "vllm")
    assert "needs base_url (--base-url)" in one_line(res)
    with pytest.raises(Exception, match="does not take device"):
        from llavaguard import Guard

        Guard.from_pretrained("m", engine="vllm", base_url="http://127.0.0.1:9/v1", device="cpu")


def test_once_a_server_is_gone_requests_fail_at_once_for_a_while():
    """After one request gave up on a server (retries spent), the next ones fail with the
    same reason without connecting: a run whose server died ends in seconds."""
    from llavaguard.engines import GenerationConfig, VisionRequest
    from llavaguard.engines.openai import OpenAIEngine, OpenAIOptions
    from llavaguard.errors import EngineError

    url = f"http://127.0.0.1:{free_port()}/v1"
    engine = OpenAIEngine("m", OpenAIOptions(base_url=url, max_retries=1, backoff=0.01))
    tries = []
    post = engine._client.post
    engine._client.post = lambda *a, **kw: tries.append(1) or post(*a, **kw)
    request, config = VisionRequest(text="hi"), GenerationConfig(max_new_tokens=1)
    with pytest.raises(EngineError, match="ConnectError") as first:
        engine.generate([request], config)
    assert len(tries) == 2  # the request and its one retry
    for _ in range(3):
        with pytest.raises(EngineError) as later:
            engine.generate([request], config)
        assert str(later.value) == str(first.value)
    assert len(tries) == 2  # nothing more was sent
    engine.close()
