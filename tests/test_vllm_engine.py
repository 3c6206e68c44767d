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


# ---- the score plan: which requests score which continuation ----------------------------------


def toy_tokenizer():
    """Tokens are characters, except that "ab" is one token: cutting "...a" | "b..." changes
    the tokens, as BPE merges do across a cut."""
    vocab: dict[str, int] = {}

    def tokenize(text: str) -> list[int]:
        out, i = [], 0
        while i < len(text):
            piece = "ab" if text.startswith("ab", i) else text[i]
            out.append(vocab.setdefault(piece, len(vocab)))
            i += len(piece)
        return out

    def detokenize(tokens: list[int]) -> str:
        names = {v: k for k, v in vocab.items()}
        return "".join(names[t] for t in tokens)

    return tokenize, detokenize


def node_reply(path: tuple[int, ...], logprobs: dict[int, float], prompt: list[int]) -> dict:
    top = [{"token": f"token_id:{t}", "logprob": lp} for t, lp in logprobs.items()]
    return {"prompt_token_ids": prompt + list(path),
            "choices": [{"logprobs": {"content": [{"top_logprobs": top}]}}]}  # fmt: skip


def test_the_plan_is_a_token_tree_and_sums_each_continuation_along_it():
    from llavaguard.engines.vllm import _Plan

    tokenize, detokenize = toy_tokenizer()
    plan = _Plan.make("P", ["xy", "xz", "w"], tokenize, detokenize)
    x, y, z, w = (tokenize(c)[0] for c in "xyzw")
    assert plan.direct == [] and set(plan.nodes) == {(), (x,)}  # two requests, not three
    assert plan.root.children == tuple(sorted((x, w))) and plan.nodes[(x,)].text == "x"
    prompt = tokenize("<image>P")
    replies = {(): node_reply((), {x: -1.0, w: -2.0}, prompt),
               (x,): node_reply((x,), {y: -0.5, z: -3.0}, prompt)}  # fmt: skip
    assert plan.logprobs("server", replies) == [-1.5, -4.0, -2.0]


def test_a_continuation_whose_tokens_change_when_cut_is_scored_whole():
    from llavaguard.engines.vllm import _Plan

    tokenize, detokenize = toy_tokenizer()
    plan = _Plan.make("xa", ["bc", "d"], tokenize, detokenize)  # "xa"+"bc" tokenizes x,ab,c
    assert plan.direct == [0]  # its tokens are not the prefix's tokens and then its own
    ab, c, d = tokenize("ab")[0], tokenize("c")[0], tokenize("d")[0]
    prompt = tokenize("<image>")
    direct = {"prompt_token_ids": prompt + tokenize("xabc"),
              "prompt_logprobs": [None] * len(prompt) + [{str(t): {"logprob": -0.25}}
                                                        for t in tokenize("xabc")]}  # fmt: skip
    replies = {(): node_reply((), {d: -0.7}, prompt + tokenize("xa")), 0: direct}
    # the whole continuation is what the server scored after the prefix's shared tokens
    assert plan.tails[0] == (ab, c)
    assert plan.logprobs("server", replies) == [-0.5, -0.7]


def test_a_reply_for_other_tokens_than_the_node_is_refused():
    from llavaguard.engines.vllm import _Plan
    from llavaguard.errors import EngineError

    tokenize, detokenize = toy_tokenizer()
    plan = _Plan.make("P", ["xy", "w"], tokenize, detokenize)
    x, y, w = (tokenize(c)[0] for c in "xyw")
    replies = {(): node_reply((), {x: -1.0, w: -2.0}, [7]),
               (x,): node_reply((w,), {y: -0.5}, [7])}  # the server saw another prompt  # fmt: skip
    with pytest.raises(EngineError, match="does not end with the continuation's tokens"):
        plan.logprobs("server", replies)
    replies[(x,)] = node_reply((x,), {}, [7])  # no log-probability for y
    with pytest.raises(EngineError, match="no log-probability for token"):
        plan.logprobs("server", replies)


def test_logprobs_off_means_no_scores_and_so_no_triage():
    from llavaguard.engines import ScoreKind
    from llavaguard.engines.vllm import VLLMEngine, VLLMOptions

    url = f"http://127.0.0.1:{free_port()}/v1"
    assert VLLMEngine("m", VLLMOptions(base_url=url)).capabilities.scores is ScoreKind.EXACT
    engine = VLLMEngine("m", VLLMOptions(base_url=url, logprobs=False))
    assert engine.capabilities.scores is ScoreKind.NONE and not engine.capabilities.top_logprobs
