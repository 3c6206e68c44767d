"""The pipeline package: one definition of a failed item for both executors, the JSONL writer's
resume rules, and stage markers."""

from __future__ import annotations

import json
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


# ---- a work unit's output: whole, under its own name, marked after --------------------------


def test_a_unit_is_written_whole_under_its_own_name_and_marked_after(tmp_path):
    from llavaguard.pipeline import UnitOutput

    out = UnitOutput(tmp_path, answered="rating")
    assert out.state("000001") == ("todo", 0)
    first = [{"id": "a", "rating": "Safe"}, {"id": "b", "rating": None}]
    out.write("000001", first, {"failed": 1})
    assert out.state("000001") == ("redo", 2)  # a failed row: the unit is redone for it
    assert out.kept("000001") == [{"id": "a", "rating": "Safe"}]
    out.write("000001", [*out.kept("000001"), {"id": "b", "rating": "Unsafe"}], {"failed": 0})
    assert out.state("000001") == ("done", 2)
    assert [p.name for p in tmp_path.glob("part-*")] == ["part-u-000001.parquet"]
    assert not list(tmp_path.rglob("*.tmp"))
    # a file without its marker (a worker killed between the two) is not done...
    out.marker("000001").unlink()
    assert out.state("000001") == ("todo", 0)
    # ...nor is a marker whose file is gone, or one that cannot be read
    out.write("000001", first[:1], {"failed": 0})
    out.path("000001").unlink()
    assert out.state("000001") == ("todo", 0)
    out.marker("000001").write_text("{half")
    assert out.state("000001") == ("todo", 0)
    # a damaged file is redone whole, with a warning, not trusted
    out.path("000001").write_bytes(b"PAR1 cut off")
    assert out.kept("000001") == []


def test_a_ray_run_refuses_what_it_cannot_do_before_joining_a_cluster(tmp_path, photos):
    from llavaguard.annotate import AnnotateConfig, annotate

    folder = str(photos[0].parent)
    common = dict(inputs=[folder], backend="ray", ray_address="127.0.0.1:1")  # nothing there

    def refused(out: Path, **kw) -> str:
        with pytest.raises(ConfigError) as e:
            annotate(AnnotateConfig(output=out, **{**common, **kw}))
        return str(e.value)

    assert "--limit goes with the local backend" in refused(tmp_path / "a", limit=2)
    why = refused(tmp_path / "b", ray_base_urls=["http://127.0.0.1:9/v1"])
    assert why == "--ray-base-url goes with --engine vllm or openai"
    # a folder cut into units one way is not cut another way later
    (tmp_path / "c" / "_units").mkdir(parents=True)
    (tmp_path / "c" / "_units" / "_settings.json").write_text(
        '{"unit_size": 1000, "source": "auto"}'
    )
    assert "cut into units with unit_size 1000, not 10" in refused(tmp_path / "c", unit_size=10)
    # the local backend's rows are finished where they began
    from llavaguard.annotate import ResultStore
    from llavaguard.annotate.step import identity
    from llavaguard.policy import Policy

    store = ResultStore(tmp_path / "d")
    cfg = AnnotateConfig(output=tmp_path / "d", **common)
    store.open(identity(cfg, Policy.load().id), {}, False)
    store.write_shard([{"id": "x"}])
    store.close()
    assert "holds rows of a local run; finish it with --backend local" in refused(tmp_path / "d")


def test_a_pool_of_servers_gives_each_actor_its_own():
    from llavaguard.annotate import AnnotateConfig
    from llavaguard.annotate.cluster import _actor_configs
    from llavaguard.guard import GuardSpec

    urls = ["http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1"]
    spec = GuardSpec(model="m", engine="vllm", engine_options={"base_url": "http://127.0.0.1:9/v1"})
    cfg = AnnotateConfig(inputs=["-"], output=Path("-"), guard=spec, backend="ray",
                         ray_base_urls=urls)  # fmt: skip
    configs = _actor_configs(cfg)
    assert [c.guard.options().base_url for c in configs] == urls
    assert {c.guard.model for c in configs} == {"m"}  # the rest of the spec is the run's
