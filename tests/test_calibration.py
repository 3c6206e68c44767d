"""Calibration of P(Unsafe): fitting (temperature, isotonic, thresholds), the file, applying
it in the Guard, ``llavaguard calibrate`` and ``evaluate run --calibration``.

The synthetic benchmark's trained model is calibrated in tests/test_loop.py (it trains it)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image
from test_multilabel import ScoringEngine

from llavaguard import Guard, Policy
from llavaguard.errors import ConfigError
from llavaguard.evaluate.calibrate import choose_threshold, fit, fit_temperature
from llavaguard.guard.calibration import Calibration

from conftest import cli


def overconfident(n: int, temperature: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from true probabilities, and scores that exaggerate them: the logit
    multiplied by ``temperature`` (what temperature scaling undoes)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return y, 1 / (1 + np.exp(-z * temperature))


def test_temperature_scaling_recovers_the_exaggeration_and_lowers_ece():
    y, p = overconfident(20000, 3.0)
    assert fit_temperature(y, p) == pytest.approx(3.0, rel=0.1)
    method, _, knots, stats = fit(y, p, "temperature")
    assert method == "temperature" and knots is None
    assert stats["after_cross_validated"]["ece"] < stats["before"]["ece"] / 3
    assert stats["after_cross_validated"]["brier"] < stats["before"]["brier"]


def test_a_perfectly_ranked_set_does_not_push_scores_to_certainty():
    """72 samples the model gets all right, hedging (0.95 / 0.05): plain log-loss has no
    optimum there (T -> 0); Platt's targets give a finite T, and a score the set never
    showed (0.6) stays uncertain after the map."""
    y = np.array([1] * 36 + [0] * 36)
    p = np.array([0.95] * 36 + [0.05] * 36)
    t = fit_temperature(y, p)
    calibrated = 1 / (1 + np.exp(-np.log(0.6 / 0.4) / t))
    target = 37 / 38  # (N+ + 1) / (N+ + 2): the map sends 0.95 there
    assert 1 / (1 + np.exp(-np.log(0.95 / 0.05) / t)) == pytest.approx(target, abs=1e-3)
    assert 0.6 < calibrated < 0.7


def test_auto_picks_isotonic_only_with_data_enough_and_when_it_is_better():
    rng = np.random.default_rng(1)
    q = rng.random(4000)  # a distortion no temperature undoes: a step in the middle
    y = (rng.random(4000) < q).astype(int)
    p = np.where(q < 0.5, q / 4, 0.75 + q / 4)
    method, _, knots, stats = fit(y, p, "auto")
    assert method == "isotonic" and knots is not None
    assert set(stats["tried"]) == {"temperature", "isotonic"}
    assert stats["tried"]["isotonic"]["brier"] < stats["tried"]["temperature"]["brier"]
    few_y, few_p = y[:100], p[:100]
    assert fit(few_y, few_p, "auto")[0] == "temperature"
    with pytest.raises(ConfigError, match="isotonic calibration needs at least 500"):
        fit(few_y, few_p, "isotonic")
    with pytest.raises(ConfigError, match="both Safe and Unsafe"):
        fit(np.ones(50, int), few_p[:50])


def test_thresholds_meet_their_targets():
    y, p = overconfident(3000, 2.0, seed=2)
    t = choose_threshold(y, p, "fpr", 0.05)
    unsafe = p >= t.threshold
    assert unsafe[y == 0].mean() <= 0.05 and t.fpr <= 0.05
    assert unsafe[y == 1].mean() == pytest.approx(t.recall)
    r = choose_threshold(y, p, "recall", 0.9)
    assert (p >= r.threshold)[y == 1].mean() >= 0.9


def calibration(**kw) -> Calibration:
    policy = Policy.load()
    fields = dict(model="scripted-model", policy_id=policy.id, policy=policy.describe(),
                  method="temperature", temperature=2.0)  # fmt: skip
    return Calibration(**{**fields, **kw})


def test_the_file_round_trips_and_bad_files_are_one_line(tmp_path):
    cal = calibration(method="isotonic", isotonic=[[0.1, 0.5, 0.9], [0.0, 0.4, 1.0]])
    path = cal.save(tmp_path / "c.json")
    again = Calibration.load(path)
    assert again == cal and json.loads(path.read_text())["schema"] == 1
    for x in (0.05, 0.3, 0.7, 0.95):
        assert again.apply(x) == pytest.approx(np.interp(x, [0.1, 0.5, 0.9], [0.0, 0.4, 1.0]))
    assert calibration().apply(0.8) == pytest.approx(1 / (1 + math.exp(-math.log(4) / 2)))
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "odd.json").write_text('{"model": "m"}')
    for name, why in (("none.json", "no such calibration file"), ("bad.json", "not JSON"),
                      ("odd.json", "policy_id")):  # fmt: skip
        with pytest.raises(ConfigError, match=why) as e:
            Calibration.load(tmp_path / name)
        assert "\n" not in str(e.value)


def test_the_guard_calibrates_scores_and_refuses_other_models_and_policies():
    image = Image.new("RGB", (20, 10), "gray")
    plain = Guard(ScoringEngine(unsafe=1.0), mode="triage").assess(image)
    cal = calibration(threshold={"target": "fpr", "value": 0.05, "threshold": 0.7,
                                 "fpr": 0.05, "recall": 0.5})  # fmt: skip
    guard = Guard(ScoringEngine(unsafe=1.0), mode="triage", calibration=cal)
    a = guard.assess(image)
    assert a.raw_score == pytest.approx(plain.score)
    assert a.score == pytest.approx(cal.apply(plain.score)) and a.score < plain.score
    assert guard.threshold == 0.7  # the calibration's threshold decides
    assert a.rating == ("Unsafe" if a.score >= 0.7 else "Safe")
    assert Guard(ScoringEngine(), calibration=cal, threshold=0.2).threshold == 0.2
    with pytest.raises(ConfigError, match="fitted for model scripted-model, not other"):
        Guard(ScoringEngine(model_id="other"), calibration=cal)
    with pytest.raises(ConfigError, match=r"fitted under policy llavaguard-v1\.2") as e:
        guard.assess(image, allow="O1")
    assert "\n" not in str(e.value)


def write_set(tmp_path, name: str, n: int, seed: int, model: str = "scripted-model"):
    """A labelled set (ids and ratings) and an assess-style predictions file for it whose
    scores are over-confident."""
    y, p = overconfident(n, 3.0, seed)
    policy = Policy.load()
    labels, preds = tmp_path / f"{name}.labels.jsonl", tmp_path / f"{name}.predictions.jsonl"
    with labels.open("w") as f:
        for i, t in enumerate(y):
            f.write(json.dumps({"id": f"{name}-{i}", "rating": ["Safe", "Unsafe"][t],
                                "category": "O2" if t else None}) + "\n")  # fmt: skip
    with preds.open("w") as f:
        for i, s in enumerate(p):
            f.write(json.dumps({"id": f"{name}-{i}", "rating": "Unsafe" if s >= 0.5 else "Safe",
                                "score": float(s), "policy_id": policy.id,
                                "model": model}) + "\n")  # fmt: skip
    return labels, preds


def test_calibrate_then_evaluate_held_out_through_the_cli(tmp_path):
    fit_labels, fit_preds = write_set(tmp_path, "fit", 600, seed=3)
    out = tmp_path / "cal.json"
    r = cli("calibrate", str(fit_labels), "--predictions", str(fit_preds), "-o", str(out),
            "--target-fpr", "0.1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out) and "cross-validated" in r.stderr
    cal = Calibration.load(out)
    assert cal.model == "scripted-model" and cal.policy_id == Policy.load().id
    assert cal.fitted["samples"] == 600 and cal.threshold.fpr <= 0.1
    held_labels, held_preds = write_set(tmp_path, "held", 400, seed=4)
    report_dir = tmp_path / "report"
    r = cli("evaluate", "run", str(held_labels), "--predictions", str(held_preds),
            "--calibration", str(out), "-o", str(report_dir), "--bootstrap", "0")  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads((report_dir / "report.json").read_text())
    c = report["calibration"]
    assert c["samples"] == 400 and c["after"]["ece"] < c["before"]["ece"]
    assert c["after"]["brier"] < c["before"]["brier"]
    assert c["threshold"]["held_out"]["fpr"] <= 0.2
    assert (report_dir / "plots" / "calibration.png").is_file()
    assert "## Calibration" in (report_dir / "report.md").read_text()
    # predictions of another model are refused in one line
    _, other = write_set(tmp_path, "held", 400, seed=4, model="another-model")
    r = cli("evaluate", "run", str(held_labels), "--predictions", str(other),
            "--calibration", str(out), "-o", str(tmp_path / "r2"))  # fmt: skip
    assert r.returncode == 2 and "fitted for model scripted-model, not another-model" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_calibrate_refuses_what_it_cannot_fit(tmp_path):
    labels, preds = write_set(tmp_path, "s", 50, seed=5)
    cases = [
        ([str(labels)], "give either a predictions file or a model"),
        ([str(labels), "--predictions", str(preds), "--target-fpr", "0.1", "--target-recall",
          "0.9"], "choose one target"),
        ([str(labels), "--predictions", str(preds), "--method", "isotonic"], "needs at least 500"),
        ([str(labels), "--predictions", str(preds), "--method", "platt"], "method"),
    ]  # fmt: skip
    for args, why in cases:
        r = cli("calibrate", *args, "-o", str(tmp_path / "c.json"))
        assert r.returncode == 2 and why in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
