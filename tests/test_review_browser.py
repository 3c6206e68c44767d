"""The review page in a real browser (Playwright driving Debian's chromium) over a real
annotation folder: filter, review ten items by keyboard, reload and find them kept, export
the corrections and evaluate the export. Screenshots for docs/review.md come from here: they go
to the test's own folder unless LLAVAGUARD_DOC_SHOTS names one (a test run leaves the checkout
as it was; ``LLAVAGUARD_DOC_SHOTS=docs/img pytest tests/test_review_browser.py`` refreshes them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import cli, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def page_server(tmp_path, tiny):
    """An annotation folder of 14 photos judged by the tiny model, and its review page."""
    from llavaguard.testing import make_sample_images

    make_sample_images(tmp_path / "photos", 14, seed=7)
    res = cli("annotate", "run", str(tmp_path / "photos"), "-o", str(tmp_path / "results"),
              "--model", str(tiny), "--mode", "triage", "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr
    port = free_port()
    cmd = [sys.executable, "-m", "llavaguard", "review", str(tmp_path / "results"), "--port",
           str(port), "--reviewer", "ana"]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    yield url, tmp_path
    proc.terminate()
    proc.wait(10)


def test_review_ten_by_keyboard_reload_export_and_evaluate(page_server, chromium, tiny):
    from playwright.sync_api import expect, sync_playwright

    url, tmp = page_server
    shots = Path(os.environ.get("LLAVAGUARD_DOC_SHOTS", tmp / "shots"))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        failed: list[str] = []  # server errors behind the page (thumbnails, saves) count too
        page.on("response", lambda r: failed.append(r.url) if r.status >= 500 else None)
        page.goto(url)
        expect(page.locator(".card")).to_have_count(14)
        page.select_option("#f-sort", "uncertainty")  # closest to the threshold first
        expect(page.locator("#status")).to_contain_text("of 14")
        first = page.locator(".card").first.get_attribute("data-id")
        for i in range(10):  # Unsafe, O1 for even ones; Safe for odd ones: each moves on
            page.keyboard.press("1" if i % 2 == 0 else "s")  # as fast as keys go: queued
        expect(page.locator(".card.reviewed")).to_have_count(10)
        page.keyboard.press("z")  # undo the last: nine left
        expect(page.locator(".card.reviewed")).to_have_count(9)
        page.keyboard.press("k")
        page.keyboard.press("s")
        expect(page.locator(".card.reviewed")).to_have_count(10)
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "review-grid.png"))
        page.reload()  # everything was saved at once
        expect(page.locator(".card.reviewed")).to_have_count(10)
        page.select_option("#f-reviewed", "false")
        expect(page.locator(".card")).to_have_count(4)
        page.select_option("#f-reviewed", "true")
        page.locator(f'.card[data-id="{first}"]').click()
        expect(page.locator("#detail-review")).to_contain_text("by ana")
        page.click("#agreement-link")
        expect(page.locator("#agreement")).to_contain_text("10 reviewed")
        page.screenshot(path=str(shots / "review-agreement.png"))
        browser.close()
    assert failed == []
    labels = tmp / "labels.jsonl"
    res = cli("review", "export", str(tmp / "results"), "-o", str(labels))
    assert res.returncode == 0, res.stderr
    rows = [json.loads(x) for x in labels.read_text().splitlines()]
    assert len(rows) == 10 and {r["reviewer"] for r in rows} == {"ana"}
    assert sum(r["rating"] == "Unsafe" for r in rows) == 5
    assert all(r["category"].startswith("O1:") for r in rows if r["rating"] == "Unsafe")
    res = cli("evaluate", "run", str(labels), "--model", str(tiny), "--mode", "triage",
              "-o", str(tmp / "eval"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp / "eval" / "report.json").read_text())
    assert report["overall"]["n"] == 10  # the reviewers' labels, scored as they are
