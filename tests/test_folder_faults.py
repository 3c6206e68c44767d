"""What happens to a results folder after a fault: a second run into it, a folder that cannot be
written, damaged shards, a damaged or deleted manifest, results of another run, a kill between
shards. Each is done to a real folder and followed by the next ``annotate run`` (and
``annotate report``), as a user would; the table in docs/annotate.md says the same."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llavaguard.annotate import ResultStore
from llavaguard.pipeline import Result, Step

from conftest import cli


@pytest.fixture
def inputs(tmp_path, photos) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for p in photos:
        shutil.copy(p, folder / p.name)
    return folder


def annotate(inputs: Path, out: Path, model: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli("annotate", "run", str(inputs), "-o", str(out), "--model", str(model),
               "--max-new-tokens", "12", "-b", "2", "--shard-size", "2", *extra)  # fmt: skip


def ids(out: Path) -> list[str]:
    return sorted(ResultStore(out).rows(["id"]).column("id").to_pylist())


def one_line(stderr: str) -> str:
    """The one error line a refused command prints (and nothing like a traceback)."""
    assert "Traceback" not in stderr and stderr.count("error:") == 1, stderr
    return stderr


def command(inputs: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "llavaguard", "annotate", "run", str(inputs), "-o", str(out),
            "--model", str(model), "--max-new-tokens", "12", "-b", "1", "-q", *extra]  # fmt: skip


def answered(cache: Path) -> int:
    """Inputs the run has judged so far (its dedup cache), whether or not in a shard yet."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{cache}?mode=ro", uri=True)) as db:
            return db.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.Error:  # not there yet
        return 0


# ---- a second run ----------------------------------------------------------------------------


def test_two_writers_never_pick_the_same_shard_name(tmp_path, monkeypatch):
    """Without the lock (a folder on a file system without flock, a caller that skips
    ``open``), two writers that name a shard at the same moment both keep their rows."""
    from llavaguard.pipeline import ShardWriter, shards

    a, b = ShardWriter(tmp_path), ShardWriter(tmp_path)
    real = shards.atomic_write

    def meanwhile(path, data, crash=None):  # b writes a shard between a naming and renaming
        monkeypatch.setattr(shards, "atomic_write", real)
        b.write_shard([{"id": "from b"}])
        real(path, data, crash)

    monkeypatch.setattr(shards, "atomic_write", meanwhile)
    a.write_shard([{"id": "from a"}])
    assert a.done_ids() == {"from a", "from b"} and len(a.shards()) == 2


HOLD = """
import sys, time
from pathlib import Path
from llavaguard.pipeline import JsonlWriter
writer = JsonlWriter({"out": Path(sys.argv[1])})
print("holding", flush=True)
time.sleep(120)
"""


def test_the_jsonl_writer_of_predictions_and_rationales_is_guarded_the_same_way(tmp_path):
    from llavaguard.errors import ConfigError
    from llavaguard.pipeline import JsonlWriter

    out = tmp_path / "predictions.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(ConfigError, match=r"predictions\.jsonl is in use by another run"):
            JsonlWriter({"out": out})
    finally:
        holder.kill()
        holder.wait()
    writer = JsonlWriter({"out": out})  # the killed holder left no lock behind
    writer.write([{"id": "1"}])
    assert writer.done_ids() == set() and JsonlWriter({"out": out}).done_ids() == {"1"}
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"a-file is a file, not a folder"):
        JsonlWriter({"out": tmp_path / "a-file" / "predictions.jsonl"})


# ---- a folder that cannot be written ---------------------------------------------------------


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` made read-only: by its mode, or (root ignores modes) as immutable."""
    folder.chmod(0o555)
    immutable = False
    try:
        if os.access(folder, os.W_OK):  # root: the mode does not stop writes
            immutable = subprocess.run(["chattr", "+i", str(folder)],
                                       capture_output=True).returncode == 0  # fmt: skip
            if not immutable:
                pytest.skip("cannot make a folder read-only here (root, no chattr)")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_a_folder_that_cannot_be_written_is_refused_before_any_work(tmp_path, tiny, inputs):
    (tmp_path / "a-file").write_text("not a folder")
    for out, says in ((tmp_path / "a-file", "is a file"),
                      (tmp_path / "a-file" / "results", "is under")):  # fmt: skip
        res = annotate(inputs, out, tiny)
        assert res.returncode == 2 and says in one_line(res.stderr), res.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    with read_only(empty):
        res = annotate(inputs, empty, tiny)
    assert res.returncode == 2 and "cannot be written" in one_line(res.stderr), res.stderr
    # a results folder with work left, made read-only: refused before the model is loaded
    some = tmp_path / "some"
    assert annotate(inputs, some, tiny, "--limit", "2").returncode == 0
    before = sorted(os.listdir(some))
    with read_only(some):
        res = annotate(inputs, some, tiny)
    assert res.returncode == 2 and "cannot be written" in one_line(res.stderr), res.stderr
    assert "new rows" not in res.stderr and sorted(os.listdir(some)) == before
    assert len(ids(some)) == 2


# ---- damaged shards --------------------------------------------------------------------------


def test_damaged_shards_are_set_aside_and_only_their_inputs_redone(tmp_path, tiny, inputs):
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    assert annotate(inputs, out, tiny).returncode == 0
    first, second, third = ResultStore(out).shards()  # 6 inputs, 2 a shard
    kept = pq.read_table(third, columns=["id"]).column("id").to_pylist()
    first.write_bytes(first.read_bytes()[:200])  # truncated
    second.write_bytes(b"")  # empty
    pq.write_table(pa.table({"x": [1, 2]}), out / "part-000007.parquet")  # foreign Parquet
    (out / "part-000008.parquet").write_text("not Parquet at all")  # foreign bytes
    res = cli("annotate", "report", str(out))
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "_report" / "report.json").read_text())["rows"] == 2
    assert res.stderr.count("warning: skipped damaged shard") == 4, res.stderr
    res = annotate(inputs, out, tiny)
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("warning: set aside shard") == 4, res.stderr
    assert "4 new rows (0 assessed, 4 from cache, 0 failed), 2 already done" in res.stderr
    assert sorted(os.listdir(out / "_damaged")) == sorted(
        [first.name, second.name, "part-000007.parquet", "part-000008.parquet"]
    )
    assert ids(out) == sorted(os.listdir(inputs)) and third.exists()
    assert set(kept) <= set(ids(out))
    assert pq.read_table(out).num_rows == 6  # _damaged/ is out of the dataset's way
    res = cli("annotate", "report", str(out))
    assert res.returncode == 0 and "warning" not in res.stderr, res.stderr
    manifest = json.loads((out / "_manifest.json").read_text())
    assert len(manifest["runs"][-1]["set_aside"]) == 4


@pytest.mark.slow
def test_inputs_that_failed_are_tried_again_by_the_next_run(tmp_path, tiny, inputs):
    import pyarrow.parquet as pq

    broken = inputs / "zz-broken.png"
    broken.write_bytes(b"not an image yet")
    out = tmp_path / "out"
    res = annotate(inputs, out, tiny)
    assert res.returncode == 1, res.stderr  # one input failed; its row says why
    rows = {r["id"]: r for r in pq.read_table(out).to_pylist()}
    assert rows[broken.name]["rating"] is None and rows[broken.name]["error"]
    shutil.copy(next(p for p in sorted(inputs.iterdir()) if p != broken), broken)  # fixed
    res = annotate(inputs, out, tiny)
    assert res.returncode == 0, res.stderr
    assert "trying again 1 inputs that got no answer before" in res.stderr
    assert "1 new rows" in res.stderr and "6 already done" in res.stderr, res.stderr
    table = pq.read_table(out)
    assert table.num_rows == 7 and ids(out) == sorted(os.listdir(inputs))  # no row twice
    assert {r["id"]: r for r in table.to_pylist()}[broken.name]["rating"] is not None


# ---- the manifest ----------------------------------------------------------------------------


def test_a_damaged_or_deleted_manifest_is_rebuilt_from_the_shards(tmp_path, tiny, inputs):
    out = tmp_path / "out"
    assert annotate(inputs, out, tiny).returncode == 0
    manifest = out / "_manifest.json"
    identity = json.loads(manifest.read_text())["identity"]
    text = manifest.read_text()
    damages = {"wrong shape": '["not", "a", "manifest"]', "no identity": '{"identity": 3}',
               "truncated": text[: len(text) // 2], "deleted": None}  # fmt: skip
    for damage, content in damages.items():
        if content is None:
            manifest.unlink()
            res = cli("annotate", "report", str(out))  # read from the shards, not written
            assert res.returncode == 0 and "6 rows" in res.stdout, (damage, res.stderr)
            assert not manifest.exists()
        else:
            manifest.write_text(content)
        res = annotate(inputs, out, tiny)
        assert res.returncode == 0, (damage, res.stderr)
        assert "rebuilt it from the shards" in res.stderr and "0 new rows" in res.stderr, damage
        assert json.loads(manifest.read_text())["identity"] == identity, damage
        assert ids(out) == sorted(os.listdir(inputs))
    manifest.write_text(text[:20])  # --overwrite starts over whatever the manifest holds
    res = annotate(inputs, out, tiny, "--overwrite", "--mode", "triage")
    assert res.returncode == 0 and "6 new rows" in res.stderr, res.stderr
    assert {r["mode"] for r in ResultStore(out).rows(["mode"]).to_pylist()} == {"triage"}


def test_results_of_another_run_are_not_mixed_in(tmp_path, tiny, inputs):
    out, other = tmp_path / "out", tmp_path / "other"
    assert annotate(inputs, out, tiny).returncode == 0
    assert annotate(inputs, other, tiny, "--allow", "O3").returncode == 0
    # without its manifest, the folder still knows what made it: another policy is refused
    (out / "_manifest.json").unlink()
    res = annotate(inputs, out, tiny, "--allow", "O3")
    assert res.returncode == 2, res.stderr
    assert "policy_id" in one_line(res.stderr) and "--overwrite" in res.stderr
    assert not (out / "_manifest.json").exists()
    # a shard of another run copied in is set aside, and its inputs redone under this policy
    stray = ResultStore(other).shards()[0]
    shutil.copy(stray, out / "part-000009-0000.parquet")
    res = annotate(inputs, out, tiny)
    assert res.returncode == 0, res.stderr
    assert "set aside shard part-000009-0000.parquet (made by another run)" in res.stderr
    rows = ResultStore(out).rows().to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(os.listdir(inputs))
    assert len({r["policy_id"] for r in rows}) == 1


# ---- rows reach disk while the run goes on ---------------------------------------------------


def test_a_shard_is_closed_after_the_flush_interval_however_few_its_rows(tmp_path):
    from llavaguard.pipeline import ShardWriter

    w = ShardWriter(tmp_path, shard_size=1000, flush_seconds=0.5)
    w.write([{"id": "1"}, {"id": "2"}])
    assert w.shards() == []  # not yet: the interval has not passed
    deadline = time.time() + 10
    while not w.shards() and time.time() < deadline:  # no further write needed: a timer
        time.sleep(0.05)
    assert w.done_ids() == {"1", "2"} and w.buffer == []
    w.write([{"id": "3"}])
    w.flush()
    assert w.done_ids() == {"1", "2", "3"} and len(w.shards()) == 2


class Slow(Step):
    """A step that takes 0.3 s a batch (at module level: Ray pickles it)."""

    def id_of(self, item):
        return item["id"]

    def process(self, batch):
        time.sleep(0.3)
        return [Result({"id": item["id"]}, "ok") for item in batch]


def rows_on_disk_as_it_runs(executor_cls, folder: Path, **kw) -> list[int]:
    """Rows in shards each time a batch is done (the writer's own buffer not counted)."""
    from llavaguard.pipeline import ShardWriter

    writer = ShardWriter(folder, shard_size=1000, flush_seconds=0.2)
    seen: list[int] = []

    def on_batch(n: int) -> None:
        seen.append(len(ShardWriter(folder).done_ids()))

    items = [{"id": str(i)} for i in range(10)]
    executor_cls(Slow(), writer, batch_size=2, on_batch=on_batch, **kw).run(items)
    assert writer.done_ids() == {str(i) for i in range(10)}
    return seen


def test_rows_reach_disk_every_interval_on_the_local_executor(tmp_path):
    from llavaguard.pipeline import LocalExecutor

    seen = rows_on_disk_as_it_runs(LocalExecutor, tmp_path)
    assert seen[-1] >= 6, seen  # all but the last batch or two were on disk before the end


@pytest.mark.slow
def test_kill_9_after_the_flush_interval_keeps_the_rows_and_a_second_run_is_refused(tmp_path, tiny):
    """A run killed once its first shard is closed by the flush interval keeps that shard's
    rows; the rerun goes on, and while it works a second run into the folder is refused; the
    rerun ends with each input exactly once. (The kill and the refused second run are one
    test: each ran the 40 inputs through the model.)"""
    from llavaguard.testing import make_sample_images

    images = make_sample_images(tmp_path / "many", 40, seed=11)
    out = tmp_path / "out"
    cmd = command(tmp_path / "many", out, tiny, "--flush-seconds", "1")  # shards of 1000 rows
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while not ResultStore(out).shards() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    running = proc.poll() is None
    if running:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    on_disk = len(ids(out))
    assert running and 0 < on_disk < len(images), (running, on_disk)
    # the kill left no lock behind: the rerun goes on and redoes only the rest ...
    known = answered(out / "_cache.sqlite")
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while answered(out / "_cache.sqlite") <= known and time.time() < deadline:
        assert first.poll() is None, first.communicate()[1]
        time.sleep(0.2)
    # ... and holds the folder: a second run is refused while it works
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2, second.stderr  # refused while the first holds the folder
    assert "is in use by another run" in one_line(second.stderr)
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    assert ids(out) == sorted(p.name for p in images)  # each input exactly once
