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
