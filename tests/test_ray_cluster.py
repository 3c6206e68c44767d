"""Annotation on a real two-node Ray cluster on loopback (``ray start --head`` and ``ray start
--address``), over WebDataset shards: exactly one row per input however often the driver is
killed, a node lost mid-run, a unit that kills every worker recorded while the run goes on,
identical bytes judged once across the run; the Ray backend's rows are the local backend's,
counted the same way, and each unit's rows are on disk as it ends. Every Ray test is here, on
one cluster for the module (its processes end with it)."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from llavaguard.pipeline import LocalExecutor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    """The module's cluster: two nodes on loopback; a test that loses a node adds one back."""
    pytest.importorskip("ray")
    from llavaguard.testing.ray import start_cluster

    c = start_cluster(nodes=2, cpus=2, token=os.environ["RAY_AUTH_TOKEN"])
    yield c
    c.stop()


@pytest.fixture
def ray_driver(cluster):
    """This process as a driver of the cluster, for one test."""
    import ray

    cluster.join()
    yield cluster
    ray.shutdown()


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
    report = subprocess.run([sys.executable, "-m", "llavaguard", "annotate", "report", str(out)],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "Work unit `000002`" in report.stdout and "failed 3 tries" in report.stdout
    res = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    got = rows(out)
    assert len(got) == 9 and sum(r["cached"] for r in got) == 6  # the cache outlived the run


def test_ray_backend_gives_the_local_rows(tmp_path, tiny, photos, ray_driver):
    from llavaguard.annotate import AnnotateConfig, ResultStore, annotate
    from llavaguard.guard import GuardSpec

    common = dict(inputs=[str(photos[0].parent)], guard=GuardSpec(model=str(tiny), mode="triage"),
                  batch_size=2, shard_size=4)  # fmt: skip
    annotate(AnnotateConfig(output=tmp_path / "local", **common))
    ray = dict(backend="ray", ray_address=ray_driver.address, unit_size=4, ray_actors=2)
    summary = annotate(AnnotateConfig(output=tmp_path / "ray", **ray, **common))
    assert (summary.units_done, len(list((tmp_path / "ray").glob("part-u-*")))) == (2, 2)
    assert summary.rows == len(photos)
    keys = ("id", "sha256", "width", "height", "rating", "category", "policy_id")
    local = sorted((tuple(r[k] for k in keys), r["score"])
                   for r in ResultStore(tmp_path / "local").rows().to_pylist())  # fmt: skip
    remote = sorted((tuple(r[k] for k in keys), r["score"])
                    for r in ResultStore(tmp_path / "ray").rows().to_pylist())  # fmt: skip
    assert [a for a, _ in local] == [a for a, _ in remote]
    assert [s for _, s in local] == pytest.approx([s for _, s in remote], abs=1e-6)
    # and it resumes like the local backend: nothing left to do
    again = annotate(AnnotateConfig(output=tmp_path / "ray", **ray, **common))
    assert again.rows == 0 and again.skipped == len(photos)
    # and the local backend resumes a Ray folder as its own
    here = annotate(AnnotateConfig(output=tmp_path / "ray", **common))
    assert here.rows == 0 and here.skipped == len(photos)


def test_a_units_rows_reach_disk_when_the_unit_ends_on_the_ray_executor(tmp_path, ray_driver):
    """On Ray each unit is written by its actor as it ends, not at the end of the run."""
    import ray.cloudpickle
    import test_folder_faults
    from test_folder_faults import Slow

    from llavaguard.pipeline import UnitOutput
    from llavaguard.pipeline.ray import RayExecutor, RayOptions

    for module in (test_folder_faults, sys.modules[__name__]):  # the step and reader travel
        ray.cloudpickle.register_pickle_by_value(module)
    out = UnitOutput(tmp_path)
    seen = []

    def on_unit(result):  # the driver hears of a unit once its rows and marker are on disk
        seen.append((out.state(result["unit"]), len(list(tmp_path.glob("part-u-*")))))

    units = [SimpleNamespace(name=f"u{i}", path="-", size=4) for i in range(3)]
    read = functools.partial(unit_items, per_unit=4)
    run = RayExecutor([Slow()], out, read, RayOptions(batch_size=2), on_unit=on_unit)
    stats = run.run(units)
    assert seen == [(("done", 4), 1), (("done", 4), 2), (("done", 4), 3)]
    assert stats.rows == 12 and stats.units_done == 3


def unit_items(unit, per_unit: int) -> list[dict]:
    n = int(unit.name[1:])
    return [{"id": str(n * per_unit + i)} for i in range(per_unit)]


class UnreadableGuard:
    """A guard whose model always answers something that cannot be read."""

    def __init__(self) -> None:
        from llavaguard.policy import Policy

        self.policy = Policy.load()
        self.engine = SimpleNamespace(model_id="garbling", name="fake")
        self.mode = SimpleNamespace(value="full")

    def assess(self, images, ids, batch_size):
        from llavaguard.guard.assessment import Assessment

        return [Assessment(image=i, rating=None, valid=False, raw="{'rating': Saf",
                           error="no rating in the answer", policy="p",
                           policy_id=self.policy.id, model="garbling",
                           engine="fake") for i in ids]  # fmt: skip

    def close(self) -> None:
        pass


def unreadable_step(cache: Path | None = None):
    from llavaguard.annotate import AnnotateConfig, AnnotateStep
    from llavaguard.policy import Policy

    cfg = AnnotateConfig(inputs=["-"], output=Path("-"))
    return AnnotateStep(cfg, Policy.load().id, guard=UnreadableGuard(), cache=cache)


def test_an_unreadable_answer_is_assessed_not_failed_on_both_executors(tmp_path, ray_driver):
    """Regression: the Ray backend counted an unparseable answer as failed, the local loop
    as assessed; an answer the model gave is assessed (and invalid) everywhere."""
    import pyarrow.parquet as pq
    import ray.cloudpickle

    from llavaguard.annotate import ResultStore
    from llavaguard.annotate.store import schema
    from llavaguard.inputs.sources import read_source
    from llavaguard.inputs.units import read_unit, units
    from llavaguard.pipeline import UnitOutput
    from llavaguard.pipeline.ray import RayExecutor, RayOptions
    from llavaguard.testing import make_sample_images

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the fake guard travels
    folder = make_sample_images(tmp_path / "in", 4, seed=1)[0].parent
    (folder / "broken.jpg").write_bytes(b"not an image")
    store = ResultStore(tmp_path / "local", shard_size=2)
    local = LocalExecutor(unreadable_step(), store, batch_size=2).run(read_source([str(folder)]))
    out = UnitOutput(tmp_path / "ray", schema=schema, answered="rating")
    remote = RayExecutor([unreadable_step()], out, read_unit, RayOptions(batch_size=2)).run(
        units([str(folder)], unit_size=2)
    )
    for rows in (store.rows().to_pylist(), pq.read_table(tmp_path / "ray").to_pylist()):
        assert len(rows) == 5 and sum(r["rating"] is None for r in rows) == 5
    assert local.statuses == remote.statuses == {"assessed": 4, "failed": 1}
    assert remote.units_done == 3 and not remote.units_failed


def test_an_engine_that_cannot_load_ends_the_run_with_one_line(cluster, shards, tiny, tmp_path):
    folder, _ = shards
    cmd = command(folder, tmp_path / "out", tmp_path / "no-such-model", cluster)
    res = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    [line] = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: an engine actor could not start: ")
    assert "no-such-model" in line and "Traceback" not in res.stderr
