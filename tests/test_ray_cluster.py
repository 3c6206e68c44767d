"""Annotation on a real two-node Ray cluster on loopback (``ray start --head`` and ``ray start
--address``), over WebDataset shards: exactly one row per input however often the driver is
killed, a node lost mid-run, a unit that kills every worker recorded while the run goes on,
identical bytes judged once across the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(ray_cluster):
    return ray_cluster


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[Path, list[str]]:
    """Eight shards of five inputs; one member is not an image. The ids the run must give."""
    from llavaguard.testing import make_sample_images, write_shards

    tmp = tmp_path_factory.mktemp("wds")
    images = make_sample_images(tmp / "img", 39, seed=5)
    files: list = [*images[:17], ("broken.jpg", b"not an image"), *images[17:]]
    paths = write_shards(tmp / "shards", files, per_shard=5)
    ids = [f"{p.stem}/{n:09d}" for p in paths for n in range(int(p.stem) * 5, int(p.stem) * 5 + 5)]
    return tmp / "shards", ids


def command(shards: Path, out: Path, tiny: Path, cluster, *extra: str) -> list[str]:
    return [sys.executable, "-m", "llavaguard", "annotate", "run", str(shards), "-o", str(out),
            "--model", str(tiny), "--mode", "triage", "-b", "2", "-q", "--backend", "ray",
            "--ray-address", cluster.address, "--ray-actors", "2", *extra]  # fmt: skip


def markers(out: Path) -> int:
    return len([p for p in (out / "_units").glob("*.json") if not p.name.startswith("_")])


def run_until(cmd, env, out: Path, more_than: int, then, timeout: float = 240) -> int:
    """Start the driver; once more than ``more_than`` units are marked, ``then(proc)``; the
    driver's exit status (or None when it was still running at ``then``)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    deadline = time.monotonic() + timeout
    while markers(out) <= more_than and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    running = proc.poll() is None
    then(proc)
    _, err = proc.communicate(timeout=timeout)
    assert running, f"the run ended before the kill: {err[-2000:]}"
    return proc.returncode


def rows(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(out).to_pylist()


def test_three_driver_kills_and_a_lost_node_leave_exactly_one_row_per_input(
    cluster, shards, tiny, tmp_path
):
    folder, ids = shards
    out = tmp_path / "out"
    cmd = command(folder, out, tiny, cluster)
    for _ in range(3):  # kill -9 the driver as soon as a unit more is done
        run_until(cmd, cluster.env, out, markers(out), lambda p: os.kill(p.pid, signal.SIGKILL))
    killed = markers(out)
    assert 3 <= killed < 8, killed  # each driver got a unit further, none got to the end
    clean = sum(not json.loads(p.read_text())["failed"] for p in (out / "_units").glob("0*.json"))
    # the fourth run loses the second node once a unit more is done, and finishes anyway
    try:
        rc = run_until(cmd, cluster.env, out, killed, lambda p: cluster.kill_raylet(1))
    finally:
        cluster.add_node(cpus=2)  # back to two nodes, for the tests after this one
    assert rc == 1  # the unreadable member is a failed row
    got = rows(out)
    assert sorted(r["id"] for r in got) == sorted(ids)  # exactly one row per input
    broken = [r for r in got if r["error"]]
    assert [r["key"].rsplit(":", 1)[1] for r in broken] == ["000000017.jpg"]
    assert all(r["score"] is not None for r in got if not r["error"])
    # the resumed runs wrote one file per unit, no more, and the manifest counts the last run
    assert len(list(out.glob("part-u-*.parquet"))) == markers(out) == 8
    manifest = json.loads((out / "_manifest.json").read_text())
    last = manifest["runs"][-1]
    assert last["backend"] == "ray" and not last["units_failed"]
    # done before: the marked units, but one with a failed row, which is tried again
    assert (last["units_skipped"], last["units_done"]) == (clean, 8 - clean)


def test_a_unit_that_kills_every_worker_is_recorded_and_the_run_goes_on(cluster, tiny, tmp_path):
    """One actor: the second shard repeats the first's bytes (judged once, answered from the
    run's shared cache), the third kills each worker that reads it (three tries, then the
    manifest says why); the next run does it."""
    from llavaguard.testing import make_sample_images, write_shards

    images = make_sample_images(tmp_path / "img", 3, seed=2)
    write_shards(tmp_path / "wds", [*images, *images, *images], per_shard=3)
    out = tmp_path / "out"
    cmd = command(tmp_path / "wds", out, tiny, cluster)
    cmd[cmd.index("--ray-actors") + 1] = "1"
    env = {**cluster.env, "LLAVAGUARD_TEST_CRASH": "poison:000002"}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stderr
    last = json.loads((out / "_manifest.json").read_text())["runs"][-1]
    [failed] = last["units_failed"]
    assert failed["unit"] == "000002" and failed["attempts"] == 3
    assert "Actor" in failed["reason"] and "\n" not in failed["reason"]
    got = rows(out)
    assert len(got) == 6 and Counter(r["cached"] for r in got) == {False: 3, True: 3}
    assert {r["sha256"]: r["score"] for r in got if r["cached"]} == {
        r["sha256"]: r["score"] for r in got if not r["cached"]
    }
    res = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    got = rows(out)
    assert len(got) == 9 and sum(r["cached"] for r in got) == 6  # the cache outlived the run
