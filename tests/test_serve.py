"""The real server in a subprocess on a loopback port, called by real clients: httpx, the
official openai client, and llavaguard's own remote engine."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import typing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from llavaguard.policy import Policy

from conftest import cli, free_port, start_server, stop

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def favour_ratings(src: Path, out: Path, images: list[Path], logits=(6.0, 6.3)) -> Path:
    """A copy of a tiny model whose output layer puts Safe and Unsafe near the top at the
    rating position (untied from the embeddings), so the top-20 log-probabilities a server
    gives include both and remote scores can be checked against local ones."""
    import torch
    from PIL import Image

    from llavaguard.engines import VisionRequest
    from llavaguard.engines.transformers import TransformersEngine, TransformersOptions
    from llavaguard.policy import answer_prefix

    eng = TransformersEngine.load(str(src), TransformersOptions(dtype="float32", device="cpu"))
    model, tok = eng.model, eng.tokenizer
    head = model.get_output_embeddings()
    seen: list = []
    hook = head.register_forward_hook(lambda m, i, o: seen.append(i[0][0, -1].clone()))
    for path in images:
        with Image.open(path) as im:
            req = VisionRequest(text=Policy.load().text, images=(im.convert("RGB"),),
                                prefix=answer_prefix())  # fmt: skip
        with torch.inference_mode():
            model(**eng._inputs([req]), logits_to_keep=1)
    hook.remove()
    h = torch.stack(seen).mean(0)
    w = head.weight.detach().clone()
    for word, logit in zip(("Safe", "Unsafe"), logits, strict=True):
        w[tok.encode(word, add_special_tokens=False)[0]] = h * (logit / h.dot(h))
    model.config.tie_word_embeddings = False
    model.config.get_text_config().tie_word_embeddings = False
    head.weight = torch.nn.Parameter(w)
    model.save_pretrained(out)
    eng.processor.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_models):
    from llavaguard.testing import make_sample_images

    root = tmp_path_factory.mktemp("serve")
    photos = make_sample_images(root / "photos", 4)
    tiny = tiny_models("llava-onevision")
    model = favour_ratings(tiny, root / "model", photos)
    proc, url = start_server(model, "--api-key", KEY, "--max-wait-ms", "200", "--dtype",
                             "float32")  # fmt: skip
    yield {"url": url, "model": model, "photos": photos, "root": root}
    stop(proc)


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def data_url(path: Path) -> str:
    return "data:image/png;base64," + b64(path)


@pytest.mark.slow  # a real server process
def test_health_openapi_and_models(setup):
    url = setup["url"]
    health = httpx.get(url + "/health").json()
    assert health["status"] == "ok" and health["model"] == str(setup["model"])
    spec = httpx.get(url + "/openapi.json").json()
    assert {"/v1/assess", "/v1/chat/completions", "/v1/moderations"} <= set(spec["paths"])
    models = httpx.get(url + "/v1/models", headers=AUTH).json()
    assert models["data"][0]["id"] == str(setup["model"])


@pytest.mark.slow  # a real server process
def test_assess_json_multipart_and_custom_policy(setup):
    url, photo = setup["url"], setup["photos"][0]
    r = httpx.post(url + "/v1/assess", headers=AUTH, timeout=60,
                   json={"image": b64(photo), "id": "p0", "allow": "O3,O6"})  # fmt: skip
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["image"] == "p0" and a["rating"] in ("Safe", "Unsafe")
    assert a["policy_id"] == Policy.load(allow="O3,O6").id
    assert 0 <= a["score"] <= 1 and len(a["category_scores"]) == 10
    with photo.open("rb") as f:
        r = httpx.post(url + "/v1/assess", headers=AUTH, timeout=60,
                       files={"image": (photo.name, f)}, data={"sensitive": "O4"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["policy_id"] == Policy.load(sensitive="O4").id
    assert r.json()["image"] == photo.name
    custom = {"name": "kids", "categories": [
        {"code": "K1", "name": "Scary Content", "should_not": ["Contain monsters."]}]}  # fmt: skip
    r = httpx.post(
        url + "/v1/assess",
        headers=AUTH,
        timeout=60,
        json={"image": data_url(photo), "policy": custom, "sensitive": ["K1"]},
    )
    assert r.status_code == 200, r.text
    assert set(r.json()["category_scores"]) == {"K1: Scary Content", "NA: None applying"}
    assert r.json()["policy_id"] == Policy.from_data(custom, sensitive="K1").id


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400,
         "not valid JSON"),
        ({"json": {"image": "%%%"}}, 400, "invalid base64"),
        ({"json": {"image": base64.b64encode(b"hello, not an image").decode()}}, 400,
         "not an image"),
        ({"json": {"image": "aGk=", "policy": "/etc/passwd"}}, 400, "unknown policy"),
        ({"json": {"image_url": "http://127.0.0.1/x.png"}}, 400, "not fetched"),
        ({"json": {"image": "aGk=", "allow": "Q9"}}, 400, None),
        ({"json": {}}, 400, "exactly one of"),
        ({"json": {"image": "aGk=", "colour": "red"}}, 400, "colour"),
    ],
)  # fmt: skip
@pytest.mark.slow  # a real server process
def test_bad_requests_get_json_errors(setup, kwargs, status, message):
    r = httpx.post(setup["url"] + "/v1/assess", headers={**AUTH, **kwargs.pop("headers", {})},
                   timeout=30, **kwargs)  # fmt: skip
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == status and "\n" not in err["message"]
    if message:
        assert message in err["message"]


@pytest.mark.slow  # a real server process
def test_auth_size_limits_and_unknown_routes(setup):
    url = setup["url"]
    r = httpx.post(url + "/v1/assess", json={"image": "aGk="})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = httpx.post(
        url + "/v1/assess", json={"image": "aGk="}, headers={"Authorization": "Bearer x"}
    )
    assert r.status_code == 401
    big = b"0" * (21 * 1024 * 1024)
    r = httpx.post(url + "/v1/assess", content=big, headers=AUTH)
    assert r.status_code == 413 and "over 20 MB" in r.json()["error"]["message"]
    assert httpx.get(url + "/v2/nothing").json()["error"]["code"] == 404
    r = httpx.post(url + "/v1/chat/completions", headers=AUTH, json={"messages": []})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("messages")
    r = httpx.post(
        url + "/v1/chat/completions",
        headers=AUTH,
        json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
    )
    assert r.status_code == 400 and "streaming" in r.json()["error"]["message"]
    assert httpx.get(url + "/health").status_code == 200  # still serving


@pytest.mark.slow  # a real server process
def test_official_openai_client_chat_and_moderations(setup):
    from openai import OpenAI

    client = OpenAI(base_url=setup["url"] + "/v1", api_key=KEY)
    policy = Policy.load()
    reply = client.chat.completions.create(
        model=str(setup["model"]),
        messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(setup["photos"][1])}},
            {"type": "text", "text": policy.text}]}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "a", "schema": policy.answer_schema()}},
        max_tokens=80,
    )  # fmt: skip
    answer = json.loads(reply.choices[0].message.content)  # constrained: valid JSON
    assert answer["rating"] in ("Safe", "Unsafe") and answer["category"] in policy.labels
    mod = client.moderations.create(
        model="llavaguard",
        input=[{"type": "image_url", "image_url": {"url": data_url(p)}}
               for p in setup["photos"][:2]],
    )  # fmt: skip
    assert len(mod.results) == 2
    labels = [c.label for c in policy.categories]
    for result in mod.results:
        cats = result.categories.model_dump()
        scores = result.category_scores.model_dump()
        assert set(labels) <= set(cats) and set(labels) <= set(scores)
        named = [label for label in labels if cats[label]]
        assert len(named) <= 1 and (result.flagged or not named)  # a category only if flagged
        assert all(0.0 <= scores[label] <= 1.0 for label in labels)
        assert result.category_applied_input_types.model_dump()[labels[0]] == ["image"]
    text_only = httpx.post(setup["url"] + "/v1/moderations", headers=AUTH, json={"input": "hi"})
    assert text_only.status_code == 400 and "image_url" in text_only.json()["error"]["message"]


@pytest.mark.slow  # a real server process
def test_remote_engine_matches_the_local_engine(setup, tmp_path):
    """`llavaguard assess --engine openai` against the server: the same answers as the
    local engine decoding the same way, and the same P(Unsafe)."""
    from llavaguard import Guard, GuardSpec
    from llavaguard.engines import GenerationConfig

    photos = [str(p) for p in setup["photos"]]
    out = tmp_path / "remote.jsonl"
    res = cli("assess", *photos, "--engine", "openai", "--base-url", setup["url"] + "/v1",
                  "--api-key", KEY, "--model", str(setup["model"]), "--max-new-tokens", "80",
                  "-o", str(out))  # fmt: skip
    assert res.returncode == 0, res.stderr
    remote = [json.loads(line) for line in out.read_text().splitlines()]
    local_guard = Guard.from_spec(GuardSpec(
        model=str(setup["model"]), generation=GenerationConfig(max_new_tokens=80),
        engine_options={"dtype": "float32", "device": "cpu"},
    ))  # fmt: skip
    unforced = Guard(local_guard.engine, generation=GenerationConfig(max_new_tokens=80),
                     scores=False)  # fmt: skip
    local = unforced.assess(photos)
    scored = local_guard.assess(photos)
    for r, a, s in zip(remote, local, scored, strict=True):
        assert r["engine"] == "openai" and not (r["error"] or "").startswith("no score")
        assert (r["rating"], r["category"], r["raw"]) == (a.rating, a.category, a.raw)
        assert r["rating"] == s.rating
        assert r["score"] == pytest.approx(s.score, abs=1e-4)
        assert r["category_scores"] is None  # one position of log-probabilities: rating only


@pytest.mark.slow  # a real server process
def test_concurrent_requests_are_batched(setup):
    url = setup["url"]

    def metric(name: str) -> float:
        text = httpx.get(url + "/metrics").text
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith(name + " "))  # fmt: skip

    before_n, before_sum = (
        metric("llavaguard_batch_size_count"),
        metric("llavaguard_batch_size_sum"),
    )
    body = {"image": b64(setup["photos"][2])}
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(
            lambda _: httpx.post(url + "/v1/assess", json=body, headers=AUTH, timeout=120)
            .status_code, range(16)))  # fmt: skip
    assert codes == [200] * 16
    batches = metric("llavaguard_batch_size_count") - before_n
    images = metric("llavaguard_batch_size_sum") - before_sum
    assert images == 16 and batches < 16  # some batch held more than one request
    assert (
        'llavaguard_requests_total{route="/v1/assess",status="200"}'
        in httpx.get(url + "/metrics").text
    )
    assert "llavaguard_queue_depth" in httpx.get(url + "/metrics").text


@pytest.mark.slow  # a real server process
def test_overload_gives_503_and_the_server_recovers(setup):
    proc, url = start_server(setup["model"], "--max-queue", "2", "--max-batch-size", "1",
                             "--max-wait-ms", "0")  # fmt: skip
    try:
        body = {"image": b64(setup["photos"][0])}
        with ThreadPoolExecutor(24) as pool:
            replies = list(
                pool.map(
                    lambda _: httpx.post(url + "/v1/assess", json=body, timeout=120), range(24)
                )
            )
        codes = [r.status_code for r in replies]
        assert set(codes) <= {200, 503} and codes.count(503) > 0 and codes.count(200) > 0
        busy = next(r for r in replies if r.status_code == 503)
        assert busy.headers["retry-after"] == "1" and busy.json()["error"]["type"] == "server_busy"
        assert httpx.post(url + "/v1/assess", json=body, timeout=120).status_code == 200
    finally:
        stop(proc)


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 429, then 503, then a chat completion: the remote engine must retry."""

    calls: typing.ClassVar[list[str]] = []

    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        self.calls.append(self.path)
        n = len(self.calls)
        if n <= 2:
            self.send_response(429 if n == 1 else 503)
            self.send_header("Retry-After", "0")
            self.end_headers()
            return
        body = json.dumps({"choices": [{"message": {"content": "ok"}}]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_remote_engine_retries_then_reports_one_line_errors():
    from PIL import Image

    from llavaguard.engines import VisionRequest
    from llavaguard.engines.openai import OpenAIEngine, OpenAIOptions
    from llavaguard.errors import EngineError

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/v1"
    request = VisionRequest(text="hi", images=(Image.new("RGB", (8, 8)),))
    try:
        engine = OpenAIEngine("m", OpenAIOptions(base_url=base, backoff=0.01))
        assert engine.generate([request]) == ["ok"]
        assert _Flaky.calls == ["/v1/chat/completions"] * 3
        engine = OpenAIEngine("m", OpenAIOptions(base_url=f"http://127.0.0.1:{free_port()}/v1",
                                                 max_retries=1, backoff=0.01))  # fmt: skip
        with pytest.raises(EngineError, match="ConnectError") as e:
            engine.generate([request])
        assert "\n" not in str(e.value)
    finally:
        server.shutdown()


def test_image_urls_never_reach_private_addresses():
    from llavaguard.errors import ImageError
    from llavaguard.serve.urls import fetch

    refused = [
        "http://127.0.0.1/a.png", "http://localhost:8000/a.png", "http://10.0.0.1/a",
        "http://169.254.169.254/latest/meta-data", "http://[::1]/a", "file:///etc/passwd",
    ]  # fmt: skip
    for url in refused:
        with pytest.raises(ImageError):
            fetch(url, max_bytes=1000)


def test_equal_typed_jobs_share_a_batch():
    """The batcher groups requests by their typed job: the same policy (by id) or the same
    decoding options batch together, a different job waits for its own batch."""
    import asyncio

    from llavaguard.engines import GenerationConfig
    from llavaguard.serve.batcher import Batcher
    from llavaguard.serve.jobs import AssessJob, ChatJob, TopLogprobsJob

    schema = {"type": "object", "properties": {"rating": {"type": "string"}}}
    assert AssessJob(Policy.load()) == AssessJob(Policy.load())
    assert AssessJob(Policy.load()) != AssessJob(Policy.load(allow="O3"))
    assert hash(ChatJob(GenerationConfig(json_schema=schema))) == hash(
        ChatJob(GenerationConfig(json_schema=json.loads(json.dumps(schema))))
    )
    assert ChatJob(GenerationConfig(max_new_tokens=1)) != ChatJob(GenerationConfig())
    assert len({TopLogprobsJob(20), TopLogprobsJob(20), TopLogprobsJob(5)}) == 2
    seen = []

    def run(job, payloads):
        seen.append(list(payloads))
        return [ValueError("odd") if p == 3 else p * 10 for p in payloads]

    async def main():
        batcher = Batcher(run, max_batch=8, max_wait_ms=100)
        batcher.start()
        jobs = [AssessJob(Policy.load()), ChatJob(GenerationConfig()),
                AssessJob(Policy.load()), ChatJob(GenerationConfig())]  # fmt: skip
        try:
            return await asyncio.gather(
                *(batcher.submit(job, i) for i, job in enumerate(jobs)), return_exceptions=True
            )
        finally:
            await batcher.stop()

    answers = asyncio.run(main())
    assert answers[:3] == [0, 10, 20] and isinstance(answers[3], ValueError)
    assert seen == [[0, 2], [1, 3]]  # a payload's own failure is only its own


@pytest.mark.slow  # a real server process
def test_evaluate_through_the_remote_engine(setup, tmp_path):
    rows = [
        {"id": "a", "image": str(setup["photos"][0]), "rating": "Unsafe", "category": "O1"},
        {"id": "b", "image": str(setup["photos"][1]), "rating": "Safe"},
    ]
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = cli(
        "evaluate", "run", str(labels), "--model", str(setup["model"]), "--engine", "openai",
        "--base-url", setup["url"] + "/v1", "--api-key", KEY, "--max-new-tokens", "80",
        "-o", str(tmp_path / "run"), "--bootstrap", "0", "--no-plots",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["engine"] == "openai" and report["overall"]["missing"] == 0
    assert report["overall"]["scores"]["n"] == 2  # rating scores from top log-probabilities


@pytest.mark.slow  # a real server process
def test_annotate_through_the_remote_engine(setup, tmp_path):
    from llavaguard.annotate import ResultStore

    res = cli(
        "annotate", "run", str(setup["photos"][0].parent), "-o", str(tmp_path / "out"),
        "--model", str(setup["model"]), "--engine", "openai", "--base-url",
        setup["url"] + "/v1", "--api-key", KEY, "--max-new-tokens", "80", "-b", "4", "-q",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = ResultStore(tmp_path / "out").rows().to_pylist()
    assert len(rows) == len(setup["photos"]) and {r["engine"] for r in rows} == {"openai"}
    assert all(r["rating"] and r["score"] is not None for r in rows)
