"""A hostile client against the real server: one server process on a loopback port, attacked
the ways issue #13 found it could be knocked over (oversized and chunked bodies, huge policies,
decompression bombs, schemas, URLs, slow connections...). Every attack is bounded in count and
time and goes to 127.0.0.1 only.

A monitor thread watches the server the whole time: its resident memory (from /proc) and how
long ``/health`` takes. The last test checks the promise of docs/serving.md: RSS stays within
``RSS_BUDGET_MB`` of its idle level and ``/health`` answers within ``HEALTH_BUDGET_S``
throughout. Attacks go above the ``-- attacks above --`` line.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from conftest import start_server, stop

pytestmark = pytest.mark.slow  # a real server process

KEY = "hostile-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
RSS_BUDGET_MB = 300
HEALTH_BUDGET_S = 0.1
MAX_BODY_MB = 4


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Monitor:
    """Samples the server's RSS and /health latency every ``every`` seconds until stopped."""

    pid: int
    url: str
    every: float = 0.05
    idle_mb: float = 0.0
    peak_mb: float = 0.0
    health: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.idle_mb = max(rss_mb(self.pid) for _ in range(5) if not time.sleep(0.1))
        self.peak_mb = self.idle_mb
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while not self._stop.wait(self.every):
                self.peak_mb = max(self.peak_mb, rss_mb(self.pid))
                started = time.perf_counter()
                try:
                    status = client.get("/health").status_code
                except httpx.HTTPError as e:
                    self.failures.append(f"/health: {e.__class__.__name__}")
                    continue
                self.health.append(time.perf_counter() - started)
                if status != 200:
                    self.failures.append(f"/health answered {status}")


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models):
    """The server under attack, warmed up by one real assessment, and its monitor."""
    from llavaguard.testing import make_sample_images

    root = tmp_path_factory.mktemp("hostile")
    photo = make_sample_images(root / "photos", 1)[0]
    proc, url = start_server(
        tiny_models("llava-onevision"), "--api-key", KEY, "--dtype", "float32",
        "--max-body-mb", str(MAX_BODY_MB), "--timeout", "30",
    )  # fmt: skip
    with photo.open("rb") as f:
        warm = httpx.post(url + "/v1/assess", files={"image": f}, headers=AUTH, timeout=120)
    assert warm.status_code == 200, warm.text
    monitor = Monitor(proc.pid, url)
    monitor.start()
    yield {"url": url, "proc": proc, "monitor": monitor, "photo": photo}
    monitor.stop()
    stop(proc)


# -- load: policies, image memory, admission, schemas ----------------------------------------


def _png(mode: str = "RGB", side: int = 32) -> str:
    """A PNG as a data URL; mode "1" at a large side is a bomb: a few KB, hundreds of MB."""
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (side, side)).save(buf, "PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _policy(n: int, text: str = "Contain this.") -> dict:
    categories = [{"code": f"C{i}", "name": f"Category {i}", "should_not": [text]}
                  for i in range(n)]  # fmt: skip
    return {"name": "hostile", "categories": categories}


def _parts(*urls: str) -> list[dict]:
    return [{"type": "image_url", "image_url": {"url": u}} for u in urls]


def _refused(r: httpx.Response, status: int, *words: str) -> None:
    assert r.status_code == status, r.text[:300]
    message = r.json()["error"]["message"]
    assert "\n" not in message and all(w in message for w in words), message


def test_huge_and_many_custom_policies_are_refused_or_forgotten(server):
    """600 KB policies, a 10,000-category policy, and 40 distinct policies with a bad image:
    each refused in one line, fast, and the model worker stays free for the next image."""
    url, image = server["url"] + "/v1/assess", _png()
    with httpx.Client(headers=AUTH, timeout=30) as client:
        for i in range(10):
            r = client.post(url, json={"image": image, "policy": _policy(60, f"{i}" * 10_000)})
            _refused(r, 400, "bytes of JSON", "at most 262144")
        started = time.perf_counter()
        r = client.post(url, json={"image": image, "policy": _policy(10_000)})
        _refused(r, 400, "10000 categories", "at most 100")
        assert time.perf_counter() - started < 2
        for i in range(40):
            r = client.post(url, json={"image": "bm90IGFuIGltYWdl", "policy": _policy(3, str(i))})
            _refused(r, 400, "image")
        started = time.perf_counter()
        r = client.post(url, json={"image": image})
        assert r.status_code == 200, r.text
        assert time.perf_counter() - started < 10  # no leftover work ahead of it


def test_decompression_bombs_and_many_images_are_refused_whole(server):
    """A 4.9 KB 1-bit PNG of 6300x6300 (454 MB charged on its way to the model) alone, four of them
    in one moderation request, one in a chat; 9 and 64 image parts in one request."""
    bomb, small = _png("1", 6300), _png()
    base = server["url"]
    with httpx.Client(headers=AUTH, timeout=30) as client:
        r = client.post(base + "/v1/assess", json={"image": bomb})
        _refused(r, 413, "MB decoded", "at most 256 MB a request")
        r = client.post(base + "/v1/moderations", json={"input": _parts(*[bomb] * 4)})
        _refused(r, 413, "MB decoded")
        chat = {"messages": [{"role": "user", "content": _parts(small, bomb)}], "max_tokens": 2}
        _refused(client.post(base + "/v1/chat/completions", json=chat), 413, "MB decoded")
        for n in (9, 64):
            r = client.post(base + "/v1/moderations", json={"input": _parts(*[small] * n)})
            _refused(r, 400, f"{n} images in one request", "at most 8")
        assert client.get(base + "/health").json()["queue_depth"] == 0


def test_big_json_schemas_are_refused_before_the_model(server):
    """A 20,000-value enum (seconds and 100+ MB of the worker each, before) and a compact
    5,000-value one: refused in one line before anything is compiled or queued."""
    base = server["url"]

    def chat(values: list) -> dict:
        schema = {"type": "string", "enum": values}
        return {"messages": [{"role": "user", "content": "Rate."}], "max_tokens": 4,
                "response_format": {"type": "json_schema",
                                    "json_schema": {"name": "a", "schema": schema}}}  # fmt: skip

    with httpx.Client(headers=AUTH, timeout=30) as client:
        for i in range(5):
            r = client.post(base + "/v1/chat/completions",
                            json=chat([f"{i} value {j}" for j in range(20_000)]))  # fmt: skip
            _refused(r, 400, "bytes", "at most 65536")
        r = client.post(base + "/v1/chat/completions", json=chat(list(range(5000))))
        _refused(r, 400, "5000 enum values", "at most 1000")
        started = time.perf_counter()
        r = client.post(base + "/v1/chat/completions", json=chat(["Safe", "Unsafe"]))
        assert r.status_code == 200, r.text
        assert time.perf_counter() - started < 10


def test_a_client_that_leaves_takes_its_queued_images_with_it(server):
    """While the model writes a long answer, a moderation request of 8 images queues behind
    it and its client gives up: its 8 jobs leave the queue at once and never run."""
    base = server["url"]

    def answer(tokens: int) -> dict:
        return {"messages": [{"role": "user", "content": "hi"}], "max_tokens": tokens,
                "min_tokens": tokens}  # fmt: skip

    started = time.perf_counter()  # how fast this machine writes: aim at 4 s of work
    assert httpx.post(base + "/v1/chat/completions", json=answer(100), headers=AUTH,
                      timeout=30).status_code == 200  # fmt: skip
    tokens = int(min(4000, 100 * 4 / (time.perf_counter() - started)))
    long = answer(tokens)

    def images_run() -> float:
        text = httpx.get(base + "/metrics").text
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("llavaguard_batch_size_sum "))  # fmt: skip

    before = images_run()
    with httpx.Client(headers=AUTH, timeout=60) as client:
        busy = threading.Thread(target=client.post, args=(base + "/v1/chat/completions",),
                                kwargs={"json": long})  # fmt: skip
        busy.start()
        time.sleep(0.5)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(base + "/v1/moderations", headers=AUTH, timeout=1,
                       json={"input": _parts(*[_png()] * 8)})  # fmt: skip
        time.sleep(0.3)
        depth = client.get(base + "/health").json()["queue_depth"]
        busy.join(60)
    assert depth == 0, tokens
    assert images_run() - before == 1  # the long answer; none of the 8 images


# -- attacks above -------------------------------------------------------------------------


def test_server_stayed_within_its_budget(server):
    """Runs last: throughout every attack above, memory stayed within budget of idle and
    /health stayed fast, and the server still judges an image."""
    monitor: Monitor = server["monitor"]
    with server["photo"].open("rb") as f:
        r = httpx.post(server["url"] + "/v1/assess", files={"image": f}, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    assert monitor.health, "the monitor never reached /health"
    assert not monitor.failures, monitor.failures[:5]
    assert monitor.peak_mb - monitor.idle_mb <= RSS_BUDGET_MB, (monitor.idle_mb, monitor.peak_mb)
    slowest = max(monitor.health)
    assert slowest <= HEALTH_BUDGET_S, f"/health took {slowest * 1000:.0f} ms"
