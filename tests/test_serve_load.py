"""The server's resources under load (issue #13, items 3-7): admission of a request whole or
not at all, cancelled work that never runs, bounded caches, custom policies and schemas within
size limits, decoded image memory within budget. In-process: the batcher alone, or the app on
a tiny model through httpx's ASGI transport (no socket)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import signal
import threading
import time

import httpx
import pytest

from llavaguard.serve.batcher import Batcher, QueueFull


def bomb_png(side: int = 6300) -> bytes:
    """A 1-bit PNG of side x side pixels: a few KB that decode to side^2 x 4 bytes as RGB."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def png(side: int = 32) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


# ---- the batcher ---------------------------------------------------------------------------


class Blocked:
    """A runner whose first batch waits until released, recording every payload it ran."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.ran: list[object] = []

    def __call__(self, job, payloads):
        self.ran.extend(payloads)
        self.release.wait(10)
        return [ValueError(f"bad {p}") if str(p).startswith("bad") else p for p in payloads]


def run_batcher(runner, body, **kw):
    async def main():
        batcher = Batcher(runner, **{"max_batch": 1, "max_wait_ms": 0, **kw})
        batcher.start()
        try:
            return await body(batcher)
        finally:
            runner.release.set()
            await batcher.stop()

    return asyncio.run(main())


def test_a_request_is_admitted_whole_or_not_at_all():
    """Four places: a running job and a waiting one leave room for two, so a request of
    three is refused whole (none of its jobs queued, none run), one of two goes in."""
    runner = Blocked()

    async def body(b: Batcher):
        first = asyncio.create_task(b.submit_many([("j", "a"), ("j", "b")]))
        await asyncio.sleep(0.05)  # a runs, b waits
        with pytest.raises(QueueFull):
            await b.submit_many([("j", f"refused-{i}") for i in range(4)])
        assert b.depth == 1
        second = asyncio.create_task(b.submit_many([("j", "c"), ("j", "d")]))
        await asyncio.sleep(0.05)
        assert b.depth == 3
        runner.release.set()
        return await first, await second

    assert run_batcher(runner, body, max_queue=4) == (["a", "b"], ["c", "d"])
    assert not any(str(p).startswith("refused") for p in runner.ran)


def test_a_failed_job_drops_the_rest_of_its_request():
    """The first image fails: the request's three other queued jobs never run."""
    runner = Blocked()
    runner.release.set()

    async def body(b: Batcher):
        with pytest.raises(ValueError, match="bad 0"):
            await b.submit_many([("j", "bad 0"), ("j", 1), ("j", 2), ("j", 3)])
        await asyncio.sleep(0.05)
        return b.depth

    assert run_batcher(runner, body) == 0
    assert runner.ran == ["bad 0"]


def test_a_timed_out_or_cancelled_request_starts_no_new_work():
    """While the model is busy, one request times out and another is cancelled (its client
    went away): both leave the queue at once and their jobs never run."""
    runner = Blocked()

    async def body(b: Batcher):
        busy = asyncio.create_task(b.submit("j", "busy"))
        await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):
            await b.submit_many([("j", "late-1"), ("j", "late-2")], timeout=0.1)
        gone = asyncio.create_task(b.submit_many([("j", "gone-1"), ("j", "gone-2")]))
        await asyncio.sleep(0.05)
        gone.cancel()
        await asyncio.sleep(0.01)
        depth = b.depth
        runner.release.set()
        await busy
        await asyncio.sleep(0.05)
        return depth

    assert run_batcher(runner, body) == 0
    assert runner.ran == ["busy"]


def test_stop_fails_queued_work_without_waiting_for_a_busy_model():
    runner = Blocked()

    async def body(b: Batcher):
        running = asyncio.create_task(b.submit("j", "running"))
        queued = asyncio.create_task(b.submit("j", "queued"))
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        await b.stop()
        took = time.perf_counter() - started
        outcomes = await asyncio.gather(running, queued, return_exceptions=True)
        with pytest.raises(QueueFull):
            await b.submit("j", "after")
        return took, outcomes

    took, outcomes = run_batcher(runner, body)
    assert took < 1
    assert all(isinstance(o, QueueFull) and "shutting down" in str(o) for o in outcomes)
    # the model thread is a daemon: a process exiting now does not wait for it
    assert all(t.daemon for t in threading.enumerate() if t.name == "llavaguard-model")


def test_a_client_that_goes_away_cancels_its_handler():
    """The disconnect middleware cancels a handler that waits (for the model) once its
    client disconnects, and leaves one that answers alone."""
    from llavaguard.serve.disconnect import CancelOnDisconnect

    cancelled = asyncio.Event()

    async def waits_for_ever(scope, receive, send):
        await receive()  # the body
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def main():
        messages = [{"type": "http.request", "body": b"{}", "more_body": False}]

        async def receive():
            if messages:
                return messages.pop(0)
            await asyncio.sleep(0.05)  # the client hangs up a little later
            return {"type": "http.disconnect"}

        async def send(message):
            raise AssertionError("nobody should answer a client that left")

        scope = {"type": "http", "method": "POST", "path": "/"}
        await asyncio.wait_for(CancelOnDisconnect(waits_for_ever)(scope, receive, send), 5)

    asyncio.run(main())
    assert cancelled.is_set()


# ---- caches and sizes ---------------------------------------------------------------------


def test_lru_keeps_the_most_recently_used():
    from llavaguard.lru import LRU

    cache = LRU(3)
    for i in range(5):
        cache.put(i, str(i))
        assert cache.get(0 if i < 3 else i) is not None
    assert len(cache) == 3 and cache.get(1) is None and cache.get(4) == "4"


def test_grammar_cache_is_bounded_and_schemas_are_sized(tiny):
    from transformers import AutoTokenizer

    from llavaguard.engines.constrain import GrammarCache, check_schema_size
    from llavaguard.errors import ConfigError

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    cache = GrammarCache(tokenizer, len(tokenizer), size=4)
    held = [cache.compile({"enum": [f"v{i}"]}) for i in range(12)]
    assert len(cache._compiled) == 4
    assert cache.compile({"enum": ["v0"]}) is held[0]  # still held by a caller: not recompiled
    del held
    with pytest.raises(ConfigError, match="invalid JSON schema: Unsupported type") as e:
        cache.compile({"type": "strin"})
    assert ".cc" not in str(e.value) and "\n" not in str(e.value)
    check_schema_size({"enum": list(range(1000))}, 64 * 1024, 1000)
    with pytest.raises(ConfigError, match="1001 enum values; this server takes at most 1000"):
        check_schema_size({"properties": {"a": {"enum": list(range(1001))}}}, 64 * 1024, 1000)
    with pytest.raises(ConfigError, match="bytes; this server takes at most 65536"):
        check_schema_size({"description": "x" * 70_000}, 64 * 1024, 1000)
    deep: dict = {}
    for _ in range(100_000):
        deep = {"items": deep}
    with pytest.raises(ConfigError, match="nested too deeply"):
        check_schema_size(deep, 64 * 1024 * 1024, 1000)


def test_decoded_size_is_read_from_the_header():
    """A 4.9 KB PNG that decodes to 119 MB (454 MB charged on its way to a model) is known as such
    without decoding it."""
    from llavaguard.inputs.images import DECODED_BYTES_PER_PIXEL, decoded_bytes

    data = bomb_png()
    assert len(data) < 10_000
    started = time.perf_counter()
    assert decoded_bytes(data) == 6300 * 6300 * DECODED_BYTES_PER_PIXEL
    assert time.perf_counter() - started < 0.5


# ---- the app, in-process ------------------------------------------------------------------


@pytest.fixture(scope="module")
def guard(tiny):
    from llavaguard import Guard

    g = Guard.from_pretrained(str(tiny), dtype="float32", max_new_tokens=8)
    yield g
    g.close()


def call(guard, requests, **config):
    """Run ``requests(client, app)`` against an app on ``guard`` with these settings."""
    from llavaguard.serve import ServeConfig, create_app

    app = create_app(ServeConfig(**config), guard)

    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await requests(client, app)

    return asyncio.run(main())


def one_line_error(r: httpx.Response, status: int, *words: str) -> str:
    assert r.status_code == status, r.text
    message = r.json()["error"]["message"]
    assert "\n" not in message and "Traceback" not in message
    for word in words:
        assert word in message, message
    return message


def policy_of(n: int, text: str = "Contain this.") -> dict:
    categories = [{"code": f"C{i}", "name": f"Category {i}", "should_not": [text]}
                  for i in range(n)]  # fmt: skip
    return {"name": "big", "categories": categories}


def test_what_the_server_loaded_is_frozen_out_of_garbage_collections(guard):
    """A full collection would walk the model and libraries with the GIL held (a pause of
    hundreds of ms in every thread, /health too); frozen, it walks only new objects."""
    import gc

    async def requests(client, app):
        assert (await client.get("/health")).status_code == 200
        return gc.get_freeze_count()

    assert call(guard, requests) > 100_000
    assert gc.get_freeze_count() == 0  # given back at shutdown


def test_custom_policies_are_bounded_and_only_kept_after_success(guard):
    async def requests(client, app):
        runtime = app.state.runtime
        image = base64.b64encode(png()).decode()
        r = await client.post("/v1/assess", json={"image": image, "policy": policy_of(101)})
        one_line_error(r, 400, "101 categories", "at most 100")
        started = time.perf_counter()
        r = await client.post("/v1/assess", json={"image": image, "policy": policy_of(10_000)})
        one_line_error(r, 400, "10000 categories")
        assert time.perf_counter() - started < 1
        huge = policy_of(50, "x" * 6000)  # 300 KB of JSON
        r = await client.post("/v1/assess", json={"image": image, "policy": huge})
        one_line_error(r, 400, "bytes of JSON", "at most 262144")
        r = await client.post("/v1/assess", json={"image": "bm90IGFuIGltYWdl",
                                                  "policy": policy_of(3)})  # fmt: skip
        one_line_error(r, 400, "image")
        assert len(runtime.policies) == 0  # the request failed: nothing kept
        r = await client.post("/v1/assess", json={"image": image, "policy": policy_of(3)})
        assert r.status_code == 200, r.text
        assert len(runtime.policies) == 1
        return r.json()

    assert call(guard, requests)["policy"].startswith("big")


def test_image_parts_and_decoded_memory_are_budgeted(guard):
    bomb, small = data_url(bomb_png()), data_url(png())

    def moderation(*urls):
        return {"input": [{"type": "image_url", "image_url": {"url": u}} for u in urls]}

    def chat(*urls):
        parts = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
        return {"messages": [{"role": "user", "content": [*parts, {"type": "text", "text": "?"}]}],
                "max_tokens": 2}  # fmt: skip

    async def requests(client, app):
        r = await client.post("/v1/moderations", json=moderation(*[small] * 9))
        one_line_error(r, 400, "9 images in one request", "at most 8")
        r = await client.post("/v1/chat/completions", json=chat(*[small] * 9))
        one_line_error(r, 400, "9 images in one request")
        r = await client.post("/v1/moderations", json=moderation(bomb))
        one_line_error(r, 413, "454 MB decoded", "at most 256 MB a request")
        r = await client.post("/v1/chat/completions", json=chat(small, bomb))
        one_line_error(r, 413, "MB decoded")
        budget = app.state.runtime.image_memory
        budget.take(budget.limit)  # as if other requests held it all
        r = await client.post("/v1/moderations", json=moderation(small))
        one_line_error(r, 503, "image memory")
        assert r.headers["retry-after"] == "1"
        budget.give(budget.limit)
        r = await client.post("/v1/moderations", json=moderation(small, small))
        assert r.status_code == 200, r.text
        assert budget.used == 0  # released with the request
        return r.json()

    assert len(call(guard, requests)["results"]) == 2


def test_schemas_are_sized_and_compiled_off_the_model_thread(guard, monkeypatch):
    from llavaguard.engines import constrain

    compiled_in: list[str] = []
    real = constrain.GrammarCache.compile

    def spy(self, schema):
        key = json.dumps(schema)
        if self._compiled.get(key) is None and self._held.get(key) is None:
            compiled_in.append(threading.current_thread().name)
        return real(self, schema)

    monkeypatch.setattr(constrain.GrammarCache, "compile", spy)

    def chat(schema):
        return {"messages": [{"role": "user", "content": "Rate this."}], "max_tokens": 6,
                "response_format": {"type": "json_schema",
                                    "json_schema": {"name": "a", "schema": schema}}}  # fmt: skip

    async def requests(client, app):
        big_enum = {"type": "string", "enum": [f"v{i}" for i in range(2000)]}  # 16 KB
        r = await client.post("/v1/chat/completions", json=chat(big_enum))
        one_line_error(r, 400, "2000 enum values", "at most 1000")
        r = await client.post("/v1/chat/completions", json=chat({"enum": ["x" * 70_000]}))
        one_line_error(r, 400, "bytes", "at most 65536")
        r = await client.post("/v1/chat/completions", json=chat({"type": "strin"}))
        message = one_line_error(r, 400, "invalid JSON schema")
        assert ".cc" not in message
        ok = {"type": "object", "properties": {"rating": {"enum": ["Safe", "Unsafe"]}},
              "required": ["rating"]}  # fmt: skip
        r = await client.post("/v1/chat/completions", json=chat(ok))
        assert r.status_code == 200, r.text
        r = await client.post("/v1/assess", json={"image": base64.b64encode(png()).decode(),
                                                  "policy": policy_of(2)})  # fmt: skip
        assert r.status_code == 200, r.text

    call(guard, requests)
    assert len(compiled_in) >= 2  # the chat schema and the custom policy's answer grammar
    assert "llavaguard-model" not in compiled_in


# ---- a real server ------------------------------------------------------------------------


@pytest.mark.slow  # a real server process
def test_sigterm_stops_a_busy_server_within_seconds(tiny):
    """The model is busy with a long answer (minutes on a CPU) and another request waits:
    SIGTERM still ends the process within seconds, and both requests hear 503 at once."""
    from concurrent.futures import ThreadPoolExecutor

    from conftest import start_server, stop

    proc, url = start_server(tiny, "--dtype", "float32", "--shutdown-timeout", "2")
    long = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3000,
            "min_tokens": 3000}  # fmt: skip

    def post(body):
        try:
            return httpx.post(url + "/v1/chat/completions", json=body, timeout=120).status_code
        except httpx.HTTPError as e:
            return e.__class__.__name__

    try:
        with ThreadPoolExecutor(2) as pool:
            busy = pool.submit(post, long)
            time.sleep(1.5)  # the long answer is running in the model thread
            waiting = pool.submit(post, {**long, "max_tokens": 2, "min_tokens": None})
            time.sleep(0.5)
            assert httpx.get(url + "/health", timeout=5).json()["queue_depth"] == 1
            started = time.perf_counter()
            proc.terminate()
            proc.wait(30)
            took = time.perf_counter() - started
            outcomes = busy.result(10), waiting.result(10)
    finally:
        stop(proc)
    proc.log.seek(0)
    log = proc.log.read()
    assert took < 8, (took, log[-2000:])
    assert "Application shutdown complete" in log  # a clean shutdown, then uvicorn
    assert proc.returncode == -signal.SIGTERM  # re-raises the signal it handled
    print(f"stopped in {took:.1f} s; answers: {outcomes}")
    assert outcomes == (503, 503)  # both told at once: shutting down, retry elsewhere


def test_multi_label_moderation_and_a_calibration_held_to_its_policy(tiny):
    """--multi-label: /v1/moderations' category_scores are each category's own P(violates);
    --calibration: a request under another policy than the one it was fitted for is a
    one-line 400, the calibrated score and raw_score come back for the one it fits."""
    from llavaguard import Guard, Policy
    from llavaguard.guard.calibration import Calibration

    policy = Policy.load()
    cal = Calibration(model=str(tiny), policy_id=policy.id, policy=policy.describe(),
                      method="temperature", temperature=3.0)  # fmt: skip
    g = Guard.from_pretrained(str(tiny), dtype="float32", mode="triage", multi_label=True)
    g.calibration = cal
    url = data_url(png())

    async def requests(client, app):
        r = await client.post(
            "/v1/moderations", json={"input": [{"type": "image_url", "image_url": {"url": url}}]}
        )
        assert r.status_code == 200, r.text
        (result,) = r.json()["results"]
        violations = result["assessment"]["violations"]
        assert {c.label: violations[c.code] for c in policy.categories} == result["category_scores"]
        a = result["assessment"]
        assert a["score"] == pytest.approx(cal.apply(a["raw_score"]))
        r = await client.post("/v1/assess", json={"image_url": url, "allow": ["O3"]})
        one_line_error(r, 400, "fitted under policy llavaguard-v1.2")

    call(g, requests)
    g.close()
