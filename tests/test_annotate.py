"""Dataset annotation: every source layout from real files, resumable runs that survive
kill -9, dedup, reports and exports, and the Ray backend against the local one."""

from __future__ import annotations

import csv
import io
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

from llavaguard.errors import ConfigError
from llavaguard.inputs.sources import read_source

from conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from llavaguard.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("annotate") / "m", "llava-onevision")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    from llavaguard.testing import make_sample_images

    return make_sample_images(tmp_path_factory.mktemp("photos"), 6, seed=3)


def shard(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_every_source_layout(tmp_path, photos):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = [p.read_bytes() for p in photos]
    # folder: ids relative to the folder
    items = list(read_source([str(photos[0].parent)]))
    assert [i.id for i in items] == sorted(p.name for p in photos)
    # list of paths, relative to the list
    lst = photos[0].parent / "paths.txt"
    lst.write_text("# a comment\n" + "\n".join(p.name for p in photos[:3]) + "\n\n")
    assert [i.id for i in read_source([str(lst)])] == [p.name for p in photos[:3]]
    # CSV and Parquet with a path column and an id column
    rows = [{"uid": f"u{i}", "file": str(p)} for i, p in enumerate(photos[:4])]
    with (tmp_path / "t.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["uid", "file"])
        w.writeheader()
        w.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    for name in ("t.csv", "t.parquet"):
        got = list(read_source([str(tmp_path / name)], path_column="file", id_column="uid"))
        assert [i.id for i in got] == ["u0", "u1", "u2", "u3"] and got[2].data == str(photos[2])
    with pytest.raises(ConfigError, match="no column 'path'"):
        list(read_source([str(tmp_path / "t.csv")]))
    # img2dataset shards: KEY.jpg + KEY.json + KEY.txt, two shards, a glob
    wds = tmp_path / "wds"
    wds.mkdir()
    shard(wds / "00000.tar", {"000000000.jpg": data[0], "000000000.json": b"{}",
                              "000000000.txt": b"a cat", "000000001.png": data[1]})  # fmt: skip
    shard(wds / "00001.tar", {"000010005.jpg": data[2]})
    got = list(read_source([str(wds / "*.tar")]))
    assert [i.id for i in got] == ["00000/000000000", "00000/000000001", "00001/000010005"]
    assert got[1].data == data[1] and got[0].key.endswith("00000.tar:000000000.jpg")
    assert [i.id for i in read_source([str(wds)])] == [i.id for i in got]  # folder of shards
    (wds / "00002.tar").write_bytes(b"not a tar at all" * 10)
    broken = list(read_source([str(wds / "00002.tar")], "webdataset"))
    assert len(broken) == 1 and broken[0].error.startswith("tar shard unreadable")
    # Hugging Face: Parquet with an Image struct column, and a save_to_disk-style folder
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "image": pa.array([{"bytes": data[0], "path": None}, {"bytes": None,
                           "path": str(photos[1])}], type=image_type),
        "name": ["first", "second"],
    })  # fmt: skip
    pq.write_table(table, tmp_path / "hf.parquet")
    got = list(read_source([str(tmp_path / "hf.parquet")], "hf", id_column="name"))
    assert [(i.id, i.data) for i in got] == [("first", data[0]), ("second", str(photos[1]))]
    folder = tmp_path / "hf_disk"
    folder.mkdir()
    with (
        pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink,
        pa.ipc.new_stream(sink, table.schema) as writer,
    ):
        writer.write_table(table)
    (folder / "dataset_info.json").write_text("{}")
    got = list(read_source([str(folder)]))  # detected as a datasets folder
    assert [i.id for i in got] == ["1", "2"] and got[0].data == data[0]


def test_annotate_folder_with_bad_and_duplicate_files(tmp_path, tiny, photos):
    import pyarrow.parquet as pq

    folder = tmp_path / "in"
    folder.mkdir()
    for p in photos[:4]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "copy.jpg").write_bytes(photos[0].read_bytes())  # same bytes, another name
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "out"
    res = run_cli("annotate", "run", str(folder), "-o", str(out), "--model", str(tiny),
                  "--max-new-tokens", "12", "-b", "3", "--shard-size", "2")  # fmt: skip
    assert res.returncode == 1, res.stderr  # one input failed
    from llavaguard.annotate import ResultStore

    rows = ResultStore(out).rows().to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(os.listdir(folder))
    by_id = {r["id"]: r for r in rows}
    assert by_id["broken.jpg"]["error"] and by_id["broken.jpg"]["rating"] is None
    assert by_id["copy.jpg"]["sha256"] == by_id[photos[0].name]["sha256"]
    assert [by_id["copy.jpg"]["cached"], by_id[photos[0].name]["cached"]].count(True) == 1
    assert by_id["copy.jpg"]["rating"] == by_id[photos[0].name]["rating"]
    ok = [r for r in rows if r["rating"]]
    assert all(r["width"] and r["height"] and r["policy_id"] and r["sha256"] for r in ok)
    assert "6 new rows (4 assessed, 1 from cache, 1 failed)" in res.stderr
    assert not list(out.glob(".*.tmp"))
    assert pq.read_table(out).num_rows == 6  # the folder reads as one Parquet dataset
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["identity"]["model"] == str(tiny) and manifest["runs"][0]["rows"] == 6
    # rerun: nothing left to do, nothing duplicated
    res = run_cli("annotate", "run", str(folder), "-o", str(out), "--model", str(tiny), "-q")
    assert res.returncode == 0, res.stderr
    assert len(ResultStore(out).rows()) == 6
    # another policy in the same folder is refused; --overwrite starts over
    res = run_cli("annotate", "run", str(folder), "-o", str(out), "--model", str(tiny),
                  "--allow", "O3", "-q")  # fmt: skip
    assert res.returncode == 2 and "policy_id" in res.stderr and "--overwrite" in res.stderr
    res = run_cli("annotate", "run", str(folder), "-o", str(out), "--model", str(tiny),
                  "--allow", "O3", "--overwrite", "--mode", "triage", "-q")  # fmt: skip
    assert res.returncode == 1, res.stderr
    rows = ResultStore(out).rows().to_pylist()
    assert len(rows) == 6 and {r["mode"] for r in rows} == {"triage"}


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
    res = run_cli("annotate", "run", str(folder), "-o", str(first), "--model", str(tiny),
                  "--mode", "triage", "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr
    median = statistics.median(ResultStore(first).rows(["score"]).column("score").to_pylist())
    out = tmp_path / "out"  # a threshold at the median: some Safe, some Unsafe
    res = run_cli("annotate", "run", str(folder), "-o", str(out), "--model", str(tiny),
                  "--mode", "triage", "--threshold", f"{median:.12f}", "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = ResultStore(out).rows().to_pylist()
    unsafe = [r for r in rows if r["rating"] == "Unsafe"]
    assert 0 < len(unsafe) < len(rows)
    res = run_cli("annotate", "report", str(out), "--thumbnails", "4")
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "_report" / "report.json").read_text())
    assert report["rows"] == len(rows) and report["ratings"]["Unsafe"] == len(unsafe)
    assert report["unsafe_rate"] == pytest.approx(len(unsafe) / len(rows))
    for png in ("categories.png", "scores.png", "flagged.png"):
        assert (out / "_report" / "plots" / png).read_bytes().startswith(b"\x89PNG")
    assert "unsafe rate" in res.stdout
    # exports: folder of copies, a path list, new tar shards
    safe = select(out, keep="safe")
    res = run_cli("annotate", "export", str(out), "--keep", "safe", "--to", str(tmp_path / "f"))
    assert res.returncode == 0, res.stderr
    assert sorted(os.listdir(tmp_path / "f")) == sorted(r["id"] for r in safe)
    res = run_cli("annotate", "export", str(out), "--keep", "unsafe", "--format", "list",
                  "--to", str(tmp_path / "unsafe.txt"))  # fmt: skip
    assert (tmp_path / "unsafe.txt").read_text().splitlines() == [r["key"] for r in unsafe]
    res = run_cli("annotate", "export", str(out), "--keep", "all", "--min-score", "0.0",
                  "--format", "webdataset", "--to", str(tmp_path / "wds"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    got = list(read_source([str(tmp_path / "wds")]))
    assert len(got) == len(rows) and got[0].data == Path(rows[0]["key"]).read_bytes()
    with tarfile.open(tmp_path / "wds" / "000000.tar") as tar:
        meta = json.load(tar.extractfile("000000000.json"))
    assert meta["id"] == rows[0]["id"] and meta["rating"] == rows[0]["rating"]


def test_ray_backend_gives_the_local_rows(tmp_path, tiny, photos):
    pytest.importorskip("ray")
    from llavaguard.annotate import AnnotateConfig, ResultStore, annotate
    from llavaguard.guard import GuardSpec

    common = dict(inputs=[str(photos[0].parent)], guard=GuardSpec(model=str(tiny), mode="triage"),
                  batch_size=2, shard_size=4)  # fmt: skip
    annotate(AnnotateConfig(output=tmp_path / "local", **common))
    summary = annotate(AnnotateConfig(output=tmp_path / "ray", backend="ray", **common))
    assert summary.rows == len(photos)
    keys = ("id", "sha256", "width", "height", "rating", "category", "policy_id")
    local = sorted((tuple(r[k] for k in keys), r["score"])
                   for r in ResultStore(tmp_path / "local").rows().to_pylist())  # fmt: skip
    remote = sorted((tuple(r[k] for k in keys), r["score"])
                    for r in ResultStore(tmp_path / "ray").rows().to_pylist())  # fmt: skip
    assert [a for a, _ in local] == [a for a, _ in remote]
    assert [s for _, s in local] == pytest.approx([s for _, s in remote], abs=1e-6)
    # and it resumes like the local backend: nothing left to do
    again = annotate(AnnotateConfig(output=tmp_path / "ray", backend="ray", **common))
    assert again.rows == 0 and again.skipped == len(photos)


def answered(cache: Path) -> int:
    import sqlite3

    if not cache.exists():
        return 0
    try:
        with sqlite3.connect(cache) as db:
            return db.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def test_ctrl_c_writes_what_is_done_and_exits_130(tmp_path, tiny):
    from llavaguard.annotate import ResultStore
    from llavaguard.testing import make_sample_images

    images = make_sample_images(tmp_path / "in", 30, seed=5)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "llavaguard", "annotate", "run", str(tmp_path / "in"), "-o",
           str(out), "--model", str(tiny), "--mode", "triage", "-b", "2", "--shard-size", "1000",
           "-q"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
