"""Dataset annotation, the slow runs: resumable runs that survive kill -9 and Ctrl-C, reports
and exports, and the Ray backend against the local one (source layouts, dedup and resuming in
the fast tier: test_annotate_folder.py)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from llavaguard.inputs.sources import read_source

from conftest import cli

pytestmark = pytest.mark.slow


# where the kill -9 runs die: after N rows are durable in a shard, or with the Nth shard
# written to its temporary name but not renamed (pipeline.writer.crash_point)
CRASH_POINTS = ("rows:3", "shard:1", "rows:6", "shard:2", "rows:9")


def test_kill_9_at_chosen_and_random_moments_loses_and_duplicates_nothing(tmp_path, tiny):
    from llavaguard.annotate import ResultStore
    from llavaguard.pipeline.writer import CRASH_ENV
    from llavaguard.testing import make_sample_images

    images = make_sample_images(tmp_path / "in", 40, seed=11)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "llavaguard", "annotate", "run", str(tmp_path / "in"), "-o",
           str(out), "--model", str(tiny), "--mode", "triage", "-b", "2", "--shard-size", "3",
           "-q"]  # fmt: skip
    kills, rows = 0, 0
    for point in CRASH_POINTS:  # deterministic: each run dies where it is told to
        env = {**os.environ, CRASH_ENV: point}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == -signal.SIGKILL, (point, proc.stderr)
        kills += 1
        assert not [p for p in out.glob("part-*.parquet") if p.stat().st_size == 0]
        kind, n = point.split(":")
        now = ResultStore(out).rows(["id"]).num_rows
        assert now == rows + (int(n) // 3 * 3 if kind == "rows" else (int(n) - 1) * 3), point
        assert bool(list(out.glob(".part-*.tmp"))) == (kind == "shard"), point
        rows = now
    rng = random.Random(7)  # and one kill at a random moment
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(2.0, 6.0))
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        kills += 1
    proc.wait()
    assert not [p for p in out.glob("part-*.parquet") if p.stat().st_size == 0]
    assert kills >= 5, "the run finished before it was killed five times: make it longer"
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode in (0, 1), res.stderr
    ids = ResultStore(out).rows(["id"]).column("id").to_pylist()
    assert sorted(ids) == sorted(p.name for p in images)  # each input exactly once
    assert not list(out.glob(".*.tmp"))


def test_report_and_exports(tmp_path, tiny, photos):
    import statistics

    from llavaguard.annotate import ResultStore, select

    folder = photos[0].parent
    first = tmp_path / "first"
    res = cli("annotate", "run", str(folder), "-o", str(first), "--model", str(tiny),
                  "--mode", "triage", "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr
    median = statistics.median(ResultStore(first).rows(["score"]).column("score").to_pylist())
    out = tmp_path / "out"  # a threshold at the median: some Safe, some Unsafe
    res = cli("annotate", "run", str(folder), "-o", str(out), "--model", str(tiny),
                  "--mode", "triage", "--threshold", f"{median:.12f}", "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = ResultStore(out).rows().to_pylist()
    unsafe = [r for r in rows if r["rating"] == "Unsafe"]
    assert 0 < len(unsafe) < len(rows)
    res = cli("annotate", "report", str(out), "--thumbnails", "4")
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "_report" / "report.json").read_text())
    assert report["rows"] == len(rows) and report["ratings"]["Unsafe"] == len(unsafe)
    assert report["unsafe_rate"] == pytest.approx(len(unsafe) / len(rows))
    for png in ("categories.png", "scores.png", "flagged.png"):
        assert (out / "_report" / "plots" / png).read_bytes().startswith(b"\x89PNG")
    assert "unsafe rate" in res.stdout
    # exports: folder of copies, a path list, new tar shards
    safe = select(out, keep="safe")
    res = cli("annotate", "export", str(out), "--keep", "safe", "--to", str(tmp_path / "f"))
    assert res.returncode == 0, res.stderr
    assert sorted(os.listdir(tmp_path / "f")) == sorted(r["id"] for r in safe)
    res = cli("annotate", "export", str(out), "--keep", "unsafe", "--format", "list",
                  "--to", str(tmp_path / "unsafe.txt"))  # fmt: skip
    assert (tmp_path / "unsafe.txt").read_text().splitlines() == [r["key"] for r in unsafe]
    res = cli("annotate", "export", str(out), "--keep", "all", "--min-score", "0.0",
                  "--format", "webdataset", "--to", str(tmp_path / "wds"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    got = list(read_source([str(tmp_path / "wds")]))
    assert len(got) == len(rows) and got[0].data == Path(rows[0]["key"]).read_bytes()
    with tarfile.open(tmp_path / "wds" / "000000.tar") as tar:
        meta = json.load(tar.extractfile("000000000.json"))
    assert meta["id"] == rows[0]["id"] and meta["rating"] == rows[0]["rating"]


def answered(cache: Path) -> int:
    import sqlite3

    if not cache.exists():
        return 0
    try:
        with sqlite3.connect(cache) as db:
            return db.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def start_interruptible(cmd: list[str]) -> subprocess.Popen:
    """``cmd`` started so that Ctrl-C reaches it: a shell starts a background job (``pytest
    &``) with SIGINT ignored, every child inherits that, and the run then ignored the test's
    Ctrl-C and finished (exit 0). A handler, unlike "ignore", is reset to the default by exec."""
    was = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, was)


def test_ctrl_c_writes_what_is_done_and_exits_130(tmp_path, tiny):
    from llavaguard.annotate import ResultStore
    from llavaguard.testing import make_sample_images

    images = make_sample_images(tmp_path / "in", 30, seed=5)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "llavaguard", "annotate", "run", str(tmp_path / "in"), "-o",
           str(out), "--model", str(tiny), "--mode", "triage", "-b", "2", "--shard-size", "1000",
           "-q"]  # fmt: skip
    proc = start_interruptible(cmd)
    deadline = time.time() + 120
    while time.time() < deadline and answered(out / "_cache.sqlite") < 4:
        time.sleep(0.2)  # until some batches are answered, none yet in a shard (1000 a shard)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "rerun the same command to resume" in stderr
    written = ResultStore(out).rows(["id"]).num_rows
    assert 0 < written < len(images)  # the buffered rows were flushed on the way out
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert sorted(ResultStore(out).rows(["id"]).column("id").to_pylist()) == sorted(
        p.name for p in images
    )
