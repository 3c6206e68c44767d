"""The synthetic visual-policy benchmark, light version, through ``llavaguard demo``: the whole
loop (synthetic labels -> import -> build -> train a small random model -> evaluate ->
annotate) must learn a policy-following safeguard on the CPU, judged on held-out images."""

from __future__ import annotations

import json

import pytest

from llavaguard.demo import SCALES, THRESHOLDS, LoopConfig

from conftest import cli, run_cli


def test_scales_are_valid_and_the_demo_trains_as_the_tested_light_scale():
    """The fast tier's look at the demo: every preset is a valid config, and the default
    ``llavaguard demo`` trains exactly as the light scale that the slow test below checks
    against the thresholds (it only annotates more images)."""
    configs = {name: LoopConfig(**preset) for name, preset in SCALES.items()}
    assert set(configs) >= {"light", "demo", "full"}
    light, demo = (configs[n].model_dump(exclude={"annotate_images"}) for n in ("light", "demo"))
    assert light == demo
    res = cli("demo", "--help")
    assert res.returncode == 0 and "minutes" in res.stdout
    res = cli("demo", "--scale", "huge")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "valid: light, demo, full" in res.stderr


@pytest.mark.slow
def test_light_benchmark_learns_the_policy_through_llavaguard_demo(tmp_path):
    out = tmp_path / "demo"
    r = run_cli("demo", "--scale", "light", "-o", str(out), timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == str(out / "report.md")  # where the report is
    report = json.loads((out / "report.json").read_text())
    figures = {k: c["value"] for k, c in report["checks"].items()}
    assert set(figures) == set(THRESHOLDS)
    for name, threshold in THRESHOLDS.items():
        assert figures[name] is not None and figures[name] >= threshold, (name, figures)
    assert report["passed"]
    assert report["held_out"]["images"] >= 30  # judged on images it never saw
    # every stage left what a user would open next
    assert (out / "dataset" / "hf").is_dir()
    assert (out / "model" / "merged" / "llavaguard.json").is_file()
    assert (out / "evaluation" / "report.md").is_file()
    assert report["annotated"]["rows"] > 0 and report["annotated"]["failed"] == 0
    assert (out / "annotations" / "_report" / "report.md").is_file()
    assert "PASSED" in (out / "report.md").read_text()
    # a rerun with the same output resumes after the last finished stage: here, after all seven
    again = run_cli("demo", "--scale", "light", "-o", str(out), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("done in an earlier run") == 7, again.stderr[-3000:]
    assert json.loads((out / "report.json").read_text())["checks"] == report["checks"]
