"""Annotation in the fast tier: every source layout read from real files, and one run over a
folder with bad and duplicate files, resumed, refused under another policy and overwritten
(in this process, with the shared tiny model). The slow runs (kill -9, Ctrl-C, Ray, reports
and exports) are in test_annotate.py."""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from llavaguard.errors import ConfigError
from llavaguard.inputs.sources import read_source

from conftest import cli


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
    res = cli("annotate", "run", str(folder), "-o", str(out), "--model", str(tiny),
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
    # rerun: only the failed input is tried again (and fails again), nothing duplicated
    res = cli("annotate", "run", str(folder), "-o", str(out), "--model", str(tiny), "-q")
    assert res.returncode == 1 and "trying again 1 inputs" in res.stderr, res.stderr
    rows = ResultStore(out).rows().to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(os.listdir(folder))
    # another policy in the same folder is refused; --overwrite starts over
    res = cli("annotate", "run", str(folder), "-o", str(out), "--model", str(tiny),
                  "--allow", "O3", "-q")  # fmt: skip
    assert res.returncode == 2 and "policy_id" in res.stderr and "--overwrite" in res.stderr
    res = cli("annotate", "run", str(folder), "-o", str(out), "--model", str(tiny),
                  "--allow", "O3", "--overwrite", "--mode", "triage", "-q")  # fmt: skip
    assert res.returncode == 1, res.stderr
    rows = ResultStore(out).rows().to_pylist()
    assert len(rows) == 6 and {r["mode"] for r in rows} == {"triage"}
