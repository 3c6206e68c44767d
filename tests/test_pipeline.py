"""The pipeline package: one definition of a failed item for both executors, the JSONL writer's
resume rules, and stage markers."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from llavaguard.errors import ConfigError
from llavaguard.pipeline import JsonlWriter, LocalExecutor, Result, Stages, Step, is_failed


def test_a_failed_item_is_one_without_an_answer():
    assert is_failed({"error": "broken.jpg: not an image", "raw": None, "rating": None})
    assert is_failed({"error": "the engine timed out"})
    # the model answered, but the answer could not be read: invalid, not failed
    assert not is_failed({"error": "no rating in the answer", "raw": "{garbage", "rating": None})
    assert not is_failed({"error": None, "raw": "{}", "rating": None, "valid": False})
    assert not is_failed({"error": None, "rating": "Safe", "valid": True})


# ---- both executors count an unreadable answer the same way ---------------------------------


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


@pytest.mark.slow
def test_an_unreadable_answer_is_assessed_not_failed_on_both_executors(tmp_path):
    """Regression: the Ray backend counted an unparseable answer as failed, the local loop
    as assessed; an answer the model gave is assessed (and invalid) everywhere."""
    pytest.importorskip("ray")
    import ray.cloudpickle

    from llavaguard.annotate import ResultStore
    from llavaguard.inputs.sources import read_source
    from llavaguard.pipeline.ray import RayExecutor
    from llavaguard.testing import make_sample_images

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the fake guard travels
    folder = make_sample_images(tmp_path / "in", 4, seed=1)[0].parent
    (folder / "broken.jpg").write_bytes(b"not an image")
    stats = {}
    for name, cls in (("local", LocalExecutor), ("ray", RayExecutor)):
        store = ResultStore(tmp_path / name, shard_size=2)
        run = cls(unreadable_step(), store, batch_size=2)
        stats[name] = run.run(read_source([str(folder)]))
        rows = store.rows().to_pylist()
        assert len(rows) == 5 and sum(r["rating"] is None for r in rows) == 5
    assert stats["local"].statuses == stats["ray"].statuses == {"assessed": 4, "failed": 1}


# ---- the JSONL writer ------------------------------------------------------------------------


def test_jsonl_writer_routes_resumes_and_drops_cut_lines_and_rows_to_redo(tmp_path):
    files = {"out": tmp_path / "a.jsonl", "side": tmp_path / "a.side.jsonl"}

    def route(row):
        return "side" if row["status"] == "error" else "out"

    w = JsonlWriter(files, route)
    w.write([{"id": "1", "status": "ok"}, {"id": "2", "status": "error"}])
    w.write([{"id": "3", "status": "ok"}])
    w.flush()
    with files["out"].open("a") as f:
        f.write('{"id": "4", "sta')  # a crash mid-line
    again = JsonlWriter(files, route, keep=lambda r: r["status"] != "error")
    assert again.done_ids() == {"1", "3"}  # the error is to be redone, the cut line is gone
    assert files["out"].read_text().endswith('"ok"}\n') and files["side"].read_text() == ""

    def refuse(path, row):
        if row["status"] == "ok":
            raise ConfigError(f"{path} holds other rows")

    with pytest.raises(ConfigError, match=r"a\.jsonl holds other rows"):
        JsonlWriter(files, route, check=refuse)
    assert JsonlWriter(files, route, check=refuse, overwrite=True).done_ids() == set()


class Doubling(Step):
    def __init__(self) -> None:
        self.setups = 0

    def setup(self) -> None:
        self.setups += 1

    def process(self, batch):
        return [Result({"id": i.id, "twice": 2 * i.n}, "ok" if i.n else "failed") for i in batch]


def test_local_executor_skips_done_and_duplicate_ids_and_sets_up_only_for_work(tmp_path):
    items = [SimpleNamespace(id=str(n), n=n) for n in (0, 0, 1, 2, 3)]
    writer = JsonlWriter({"out": tmp_path / "o.jsonl"})
    step = Doubling()
    stats = LocalExecutor(step, writer, batch_size=2, limit=3).run(items)
    assert (stats.seen, stats.rows, stats.duplicate_ids, dict(stats.statuses)) == (
        4, 3, 1, {"failed": 1, "ok": 2},
    )  # fmt: skip
    stats = LocalExecutor(step, JsonlWriter({"out": tmp_path / "o.jsonl"})).run(items)
    assert (stats.skipped, stats.rows, step.setups) == (4, 1, 2)
    nothing = LocalExecutor(step, JsonlWriter({"out": tmp_path / "o.jsonl"})).run(items)
    assert (nothing.rows, step.setups) == (0, 2)  # nothing to do: nothing loaded
    lines = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == ["0", "1", "2", "3"]


# ---- stage markers ---------------------------------------------------------------------------


def test_stages_resume_after_the_last_finished_stage_and_refuse_other_settings(tmp_path):
    calls = []

    def stage(name, fail=False):
        def fn():
            calls.append(name)
            if fail:
                raise RuntimeError("killed")
            return {"made": name}

        return fn

    first = Stages(tmp_path, {"seed": 0})
    assert first.run("one", stage("one"), say=lambda m: None) == {"made": "one"}
    with pytest.raises(RuntimeError):
        first.run("two", stage("two", fail=True), say=lambda m: None)
    again = Stages(tmp_path, {"seed": 0})
    said = []
    assert again.run("one", stage("one"), say=said.append) == {"made": "one"}
    assert again.run("two", stage("two"), say=said.append) == {"made": "two"}
    assert calls == ["one", "two", "two"] and said == ["[one] done in an earlier run", "[two] ..."]
    assert set(again.timings) == {"one", "two"}
    with pytest.raises(ConfigError, match="holds a run with seed 0, not 1"):
        Stages(tmp_path, {"seed": 1})
