"""Fitting a calibration of P(Unsafe) on labelled samples: ``llavaguard calibrate``.

The samples' scores come from a predictions file or from running the model (triage: the
score is the same in both modes, and triage skips the rationale). Only samples judged under
one policy are fitted (scores under another prompt are other scores): the policy given, or
else the one most samples carry. Temperature scaling is always fitted; isotonic regression
where there is data enough (``MIN_ISOTONIC``), and with ``method="auto"`` the one with the
lower cross-validated Brier score is kept. The "after" figures written into the file are
cross-validated (each sample calibrated by a map fitted without it), so they are what the
map does on samples it has not seen, not on its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from llavaguard.errors import ConfigError
from llavaguard.evaluate.calibration import figures
from llavaguard.guard.calibration import EPS, Calibration, Threshold
from llavaguard.guard.spec import GuardSpec
from llavaguard.inputs.labels import LabelledSample, read_labels

MIN_ISOTONIC = 500  # samples, with at least MIN_CLASS of each class
MIN_CLASS = 50
FOLDS = 5


class CalibrateConfig(BaseModel):
    """One fit; the same fields are ``llavaguard calibrate``'s options."""

    model_config = ConfigDict(extra="forbid")

    labels: Path = Field(description="Labelled set: JSONL, CSV, Parquet or LLaVA JSON.")
    predictions: Path | None = Field(None, description="Predictions with scores to fit.")
    guard: GuardSpec | None = Field(None, description="Or: the safeguard to score with.")
    policy_given: bool = Field(False, description="The guard's policy was chosen explicitly.")
    output: Path = Field(Path("calibration.json"), description="Where to write the file.")
    method: Literal["auto", "temperature", "isotonic"] = "auto"
    target_fpr: float | None = Field(None, gt=0, lt=1)
    target_recall: float | None = Field(None, gt=0, lt=1)
    bins: int = Field(10, ge=2)
    batch_size: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _one_each(self) -> CalibrateConfig:
        if (self.predictions is None) == (self.guard is None):
            raise ConfigError("give either a predictions file or a model, not both or neither")
        if self.target_fpr is not None and self.target_recall is not None:
            raise ConfigError("choose one target: --target-fpr or --target-recall")
        return self


# ---- the maps --------------------------------------------------------------------------------


def _logits(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


def fit_temperature(y: np.ndarray, p: np.ndarray) -> float:
    """The temperature T minimising the log-loss of sigmoid(logit(p) / T) against Platt's
    targets, (N+ + 1) / (N+ + 2) for Unsafe and 1 / (N- + 2) for Safe, as scikit-learn's
    sigmoid calibration uses. With 0 and 1 as targets, a set the model ranks perfectly has
    no optimum: the loss falls as T shrinks, and the fit pushed every unseen score to 0 or 1
    (a raw 0.6 became 0.997 on the synthetic benchmark's model). Platt's targets claim no
    more certainty than N samples show; with many samples they barely move T."""
    from scipy.optimize import minimize_scalar

    unsafe = int(np.sum(y))
    safe = len(y) - unsafe
    z, t = _logits(p), np.where(y > 0, (unsafe + 1) / (unsafe + 2), 1 / (safe + 2))

    def nll(log_t: float) -> float:
        q = np.clip(1 / (1 + np.exp(-z / np.exp(log_t))), EPS, 1 - EPS)
        return float(-np.mean(t * np.log(q) + (1 - t) * np.log(1 - q)))

    return float(np.exp(minimize_scalar(nll, bounds=(-5, 5), method="bounded").x))


def fit_isotonic(y: np.ndarray, p: np.ndarray) -> list[list[float]]:
    """Isotonic regression of the label on the score, as knots to interpolate."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y.astype(float))
    return [iso.X_thresholds_.tolist(), iso.y_thresholds_.tolist()]


def _map(method: str, y: np.ndarray, p: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    if method == "isotonic":
        xs, ys = fit_isotonic(y, p)
        return lambda s: np.interp(s, xs, ys)
    t = fit_temperature(y, p)
    return lambda s: 1 / (1 + np.exp(-_logits(s) / t))


def cross_validated(method: str, y: np.ndarray, p: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each sample's calibrated score from a map fitted on the other folds."""
    from sklearn.model_selection import StratifiedKFold

    folds = min(FOLDS, int(np.bincount(y.astype(int), minlength=2).min()))
    if folds < 2:
        return _map(method, y, p)(p)
    out = np.empty_like(p)
    for fit, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(p, y):
        out[held] = _map(method, y[fit], p[fit])(p[held])
    return out


def choose_threshold(y: np.ndarray, q: np.ndarray, target: str, value: float) -> Threshold:
    """The threshold on calibrated scores meeting the target with the best other figure:
    FPR at most ``value`` with the highest recall, or recall at least ``value`` with the
    lowest FPR. Unsafe is P >= threshold."""
    from sklearn.metrics import roc_curve

    fpr, tpr, cuts = roc_curve(y, q)
    ok = fpr <= value if target == "fpr" else tpr >= value
    if not ok.any():
        raise ConfigError(f"no threshold reaches {target} {value} on these samples")
    pick = np.flatnonzero(ok)
    i = pick[np.argmax(tpr[pick])] if target == "fpr" else pick[np.argmin(fpr[pick])]
    cut = float(np.clip(cuts[i], 1e-6, 1 - 1e-6))
    return Threshold(target=target, value=value, threshold=cut, fpr=float(fpr[i]),
                     recall=float(tpr[i]))  # fmt: skip


def fit(
    y: np.ndarray, p: np.ndarray, method: str = "auto", bins: int = 10
) -> tuple[str, float, list[list[float]] | None, dict[str, Any]]:
    """(method, temperature, isotonic knots, fitted figures) for labels ``y`` (1 = Unsafe)
    and raw scores ``p``."""
    counts = np.bincount(y.astype(int), minlength=2)
    if counts.min() == 0:
        raise ConfigError("calibration needs both Safe and Unsafe samples with scores")
    enough = len(y) >= MIN_ISOTONIC and counts.min() >= MIN_CLASS
    if method == "isotonic" and not enough:
        raise ConfigError(
            f"isotonic calibration needs at least {MIN_ISOTONIC} samples and {MIN_CLASS} of "
            f"each class; got {len(y)} ({counts[1]} Unsafe)"
        )
    tried = ["temperature", "isotonic"] if method == "auto" and enough else [method]
    if tried == ["auto"]:
        tried = ["temperature"]
    held = {m: cross_validated(m, y, p) for m in tried}
    after = {m: figures(y, q, bins) for m, q in held.items()}
    chosen = min(tried, key=lambda m: after[m]["brier"])
    stats = {"samples": len(y), "unsafe": int(counts[1]), "safe": int(counts[0]),
             "before": figures(y, p, bins), "after_cross_validated": after[chosen],
             "tried": after}  # fmt: skip
    knots = fit_isotonic(y, p) if chosen == "isotonic" else None
    return chosen, fit_temperature(y, p), knots, stats


# ---- the command -------------------------------------------------------------------------------


def _policy_samples(
    samples: list[LabelledSample], cfg: CalibrateConfig
) -> tuple[list[LabelledSample], Any]:
    """The samples under the one policy fitted: the guard's if given, else the commonest."""
    by_id = {s.policy.id: s.policy for s in samples}
    if cfg.guard is not None and cfg.policy_given:
        policy = cfg.guard.load_policy()
    else:
        policy = by_id[Counter(s.policy.id for s in samples).most_common(1)[0][0]]
    chosen = [s for s in samples if s.policy.id == policy.id]
    if not chosen:
        found = ", ".join(sorted({p.describe() for p in by_id.values()}))
        raise ConfigError(f"no labelled sample is under policy {policy.describe()} "
                          f"(the samples' policies: {found})")  # fmt: skip
    return chosen, policy


def calibrate(
    cfg: CalibrateConfig,
    on_start: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Calibration:
    """Fit, write ``cfg.output`` and return the calibration."""
    from llavaguard.evaluate.data import join, load_predictions

    samples, policy = _policy_samples(read_labels(cfg.labels), cfg)
    if cfg.guard is not None:
        predictions = _predict(samples, cfg, on_start, on_batch)
    else:
        assert cfg.predictions is not None
        predictions = load_predictions(cfg.predictions)
    rows = [r for r in join(samples, predictions)
            if r.score is not None and not r.policy_mismatch]  # fmt: skip
    models = {r.prediction.model for r in rows if r.prediction is not None}
    if not rows:
        raise ConfigError(f"no prediction with a score matches a sample under {policy.describe()}")
    if None in models or len(models) > 1:
        raise ConfigError("the predictions must name one model (a 'model' field, as llavaguard "
                          f"assess writes): found {sorted(map(str, models))}")  # fmt: skip
    y = np.array([r.sample.rating == "Unsafe" for r in rows], dtype=int)
    p = np.array([r.score for r in rows], dtype=float)
    method, temperature, knots, stats = fit(y, p, cfg.method, cfg.bins)
    stats.update(labels=str(cfg.labels), skipped=len(samples) - len(rows))
    cal = Calibration(
        model=models.pop(), policy_id=policy.id, policy=policy.describe(), method=method,
        temperature=temperature, isotonic=knots, fitted=stats,
    )  # fmt: skip
    target = ("fpr", cfg.target_fpr) if cfg.target_fpr else ("recall", cfg.target_recall)
    if target[1] is not None:
        q = np.array([cal.apply(s) for s in p])
        cal = cal.model_copy(update={"threshold": choose_threshold(y, q, *target)})
    cal.save(cfg.output)
    return cal


def _predict(
    samples: list[LabelledSample],
    cfg: CalibrateConfig,
    on_start: Callable[[int], None] | None,
    on_batch: Callable[[int], None] | None,
) -> list[Any]:
    """Score the samples in triage mode, resumably, beside the output file."""
    from llavaguard.evaluate.run import EvalConfig, predict

    assert cfg.guard is not None
    spec = cfg.guard.model_copy(update={"mode": "triage", "calibration": None})
    work = cfg.output.parent / f"{cfg.output.stem}-predictions"
    run = EvalConfig(labels=cfg.labels, guard=spec, output=work, batch_size=cfg.batch_size)
    predictions, _ = predict(samples, run, on_start, on_batch)
    return predictions
