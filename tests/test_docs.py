"""The docs stay true: the CLI reference matches --help, and README commands exist."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # starts a process per command
def test_cli_reference_is_current():
    spec = importlib.util.spec_from_file_location("gen", ROOT / "scripts" / "gen_cli_docs.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    current = (ROOT / "docs" / "cli.md").read_text("utf-8")
    assert current == gen.render(), "docs/cli.md is stale: run scripts/gen_cli_docs.py"


def test_readme_setup_and_test_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text("utf-8")
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    for command in (
        'python3 -m venv .venv && .venv/bin/pip install -e ".[dev]"',
        ".venv/bin/ruff check . && .venv/bin/python -m pytest",
    ):
        assert command in readme and command in ci


def run_example(doc_name: str, tmp_path: Path, marker: str = "## Example, runnable as shown"):
    """The bash block after ``marker`` in a doc (by default its "Example, runnable as shown"
    heading), run verbatim in an empty folder with the environment's bin on PATH."""
    import os
    import re
    import subprocess
    import sys

    doc = (ROOT / "docs" / doc_name).read_text("utf-8")
    section = doc[doc.index(marker) :]
    block = re.search(r"```bash\n(.*?)\n```", section, re.S).group(1)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    res = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    return doc, res


@pytest.mark.slow  # six processes, each loading a model
def test_evaluation_example_runs_as_shown(tmp_path):
    doc, res = run_example("evaluation.md", tmp_path)
    for run in ("full", "triage"):
        for name in ("report.json", "report.md", "samples.jsonl", "plots/confusion.png"):
            assert (tmp_path / "runs" / run / name).is_file(), (run, name)
    assert "| full | 4 | 0 |" in res.stdout and "| triage | 4 | 0 |" in res.stdout
    shown = doc[doc.index("The comparison printed") :]
    # the documented comparison is what the command prints (up to the report date)
    assert res.stdout.strip().splitlines()[-2] in shown


@pytest.mark.slow  # seven processes, each loading a model
def test_annotate_example_runs_as_shown(tmp_path):
    import pyarrow.parquet as pq

    _, res = run_example("annotate.md", tmp_path)
    assert pq.read_table(tmp_path / "results").num_rows == 8
    assert (tmp_path / "results" / "_report" / "report.md").is_file()
    assert "8 rows" in res.stdout
    kept = len(list((tmp_path / "curated").iterdir()))
    flagged = len((tmp_path / "flagged.txt").read_text().splitlines())
    assert kept + flagged == 8


def test_dataset_example_runs_as_shown(tmp_path):
    import json

    _, res = run_example("dataset.md", tmp_path)
    assert "summary.json" in res.stdout  # the ls at the end
    summary = json.loads((tmp_path / "dataset" / "summary.json").read_text())
    assert summary["recipe"] == ["v3", "v3", "v3", "v2"]
    assert summary["splits"]["train"]["images"] + summary["splits"]["test"]["images"] == 5
    for name in ("summary.md", "summary.png", "train.sharegpt.json", "dataset_info.json"):
        assert (tmp_path / "dataset" / name).is_file(), name
    assert f"num_rows: {summary['splits']['train']['samples']}" in res.stdout  # the hf folder
    imported = (tmp_path / "imported.jsonl").read_text().splitlines()
    assert len(imported) == 2 and '"kept": 2' in res.stdout  # the discarded row is counted


@pytest.mark.slow  # trains, in six processes
def test_training_example_runs_as_shown(tmp_path):
    import json

    _, res = run_example("training.md", tmp_path)
    assert (tmp_path / "model" / "merged" / "llavaguard.json").is_file()
    summary = json.loads((tmp_path / "model" / "train_summary.json").read_text())
    assert summary["steps"] >= 1 and summary["merged"].endswith("merged")
    answer = json.loads(res.stdout.strip().splitlines()[-1])
    assert answer["rating"] in ("Safe", "Unsafe") and answer["image"].endswith("O1-0000.png")


def test_benchmark_example_runs_as_shown(tmp_path):
    import json

    doc, res = run_example("evaluation.md", tmp_path, marker="<!-- example:benchmark -->")
    first = json.loads((tmp_path / "runs" / "vlguard" / "report.json").read_text())
    mapped = json.loads((tmp_path / "runs" / "vlguard-mapped" / "report.json").read_text())
    assert (first["overall"]["n"], first["overall"]["missing"]) == (2, 0)
    assert (mapped["overall"]["n"], mapped["overall"]["missing"]) == (3, 1)
    assert mapped["warnings"] == []
    (warning,) = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    shown = doc[doc.index("The first run scores two samples") :]
    assert warning in shown  # the documented warning is the one printed
    assert (tmp_path / "runs" / "vlguard" / "plots" / "confusion.png").is_file()


@pytest.mark.slow  # five processes, each loading a model
def test_scores_example_runs_as_shown(tmp_path):
    import json

    run_example("scores.md", tmp_path)
    multi = [json.loads(x) for x in (tmp_path / "multi.jsonl").read_text().splitlines()]
    assert len(multi) == 6
    assert all(sorted(r["violations"]) == [f"O{i}" for i in range(1, 10)] for r in multi)
    cal = json.loads((tmp_path / "calibration.json").read_text())
    assert cal["threshold"]["target"] == "recall" and cal["model"] == "tiny"
    rows = [json.loads(x) for x in (tmp_path / "calibrated.jsonl").read_text().splitlines()]
    cut = cal["threshold"]["threshold"]
    for r in rows:
        assert r["raw_score"] is not None and r["rating"] == ("Unsafe" if r["score"] >= cut
                                                              else "Safe")  # fmt: skip
