"""Metrics of a safeguard's answers against labels, as the LlavaGuard paper defined them, and more.

Positive class = Unsafe. Every rate is ``None`` where its denominator is empty (a slice with no
unsafe samples has no recall), never a division by zero or a silent 0. Predictions without a
rating (unparsable answers, missing predictions) are handled two ways, both reported: left out,
as the original evaluation did (``excluded``), or counted as wrong (``wrong``: an Unsafe sample
with no answer is a false negative, a Safe one a false positive).

This module knows rows of (expected, predicted, score) only; where they come from and how they
are reported live in ``data`` and ``report``. Every function takes lists or numpy arrays and
counts with numpy: an evaluation of 100,000 samples computes them for a dozen slices and a
thousand resamples, where a Python loop per row took minutes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

POSITIVE = "Unsafe"
NEGATIVE = "Safe"
InvalidAs = Literal["excluded", "wrong"]
INVALID_AS: tuple[InvalidAs, ...] = ("excluded", "wrong")
HEADLINE = ("balanced_accuracy", "recall", "specificity", "precision", "f1", "accuracy")


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _objects(values: Sequence[Any]) -> np.ndarray:
    return values if isinstance(values, np.ndarray) else np.array(values, dtype=object)


def _pair(expected: Sequence[Any], predicted: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    e, p = _objects(expected), _objects(predicted)
    if len(e) != len(p):
        raise ValueError(f"{len(e)} expected values for {len(p)} predicted")
    return e, p


def _rated(predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(answered Unsafe, answered at all) per row."""
    unsafe = predicted == POSITIVE
    return unsafe, unsafe | (predicted == NEGATIVE)


def counts(
    expected: Sequence[str], predicted: Sequence[str | None], invalid_as: InvalidAs = "excluded"
) -> dict[str, int]:
    """tp, fp, tn, fn and how many predictions had no rating. Counted as ``wrong``, an answer
    without a rating is the opposite of the label (an Unsafe sample a false negative)."""
    e, p = _pair(expected, predicted)
    pos, rated = _rated(p)
    e = e == POSITIVE
    keep = rated if invalid_as == "excluded" else np.ones(len(e), dtype=bool)
    pos = np.where(rated, pos, ~e)  # wrong by definition
    tp = int(np.count_nonzero(keep & e & pos))
    fn = int(np.count_nonzero(keep & e & ~pos))
    fp = int(np.count_nonzero(keep & ~e & pos))
    tn = int(np.count_nonzero(keep & ~e & ~pos))
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn, "invalid": int(np.count_nonzero(~rated))}


def from_counts(tp: int, fp: int, tn: int, fn: int, **extra: int) -> dict[str, Any]:
    """Every rating metric from a confusion matrix; ``None`` where undefined."""
    recall = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    out: dict[str, Any] = {
        "n": tp + fp + tn + fn,
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "recall": recall,
        "specificity": specificity,
        "precision": _ratio(tp, tp + fp),
        "accuracy": _ratio(tp + tn, tp + fp + tn + fn),
        "balanced_accuracy": None
        if recall is None or specificity is None
        else (recall + specificity) / 2,
        "f1": fbeta(tp, fp, fn, 1.0),
        "f2": fbeta(tp, fp, fn, 2.0),
    }  # fmt: skip
    out.update(extra)
    return out


def fbeta(tp: int, fp: int, fn: int, beta: float) -> float | None:
    """(1+b^2)TP / ((1+b^2)TP + b^2 FN + FP): the harmonic form, defined unless there is
    neither a positive sample nor a positive prediction."""
    b2 = beta * beta
    return _ratio((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp)


def rating_metrics(
    expected: Sequence[str], predicted: Sequence[str | None], invalid_as: InvalidAs = "excluded"
) -> dict[str, Any]:
    c = counts(expected, predicted, invalid_as)
    return from_counts(**c)


# ---- policy exceptions ------------------------------------------------------------------------

EXCEPTION_ANSWER = {"allowed": NEGATIVE, "sensitive": POSITIVE}


def policy_exception_rate(
    exceptions: Sequence[str | None],
    predicted: Sequence[str | None],
    invalid_as: InvalidAs = "excluded",
) -> dict[str, Any]:
    """PER: over samples whose policy declares their own category allowed (answer must be Safe)
    or sensitive (answer must be Unsafe), the share answered so; also per exception kind."""
    return per_from_cells(exception_cells(exceptions, predicted), invalid_as)


def exception_cells(
    exceptions: Sequence[str | None], predicted: Sequence[str | None]
) -> dict[str, tuple[int, int, int]]:
    """kind -> (answered right, answered wrong, not answered): PER and its bootstrap are
    functions of these six counts."""
    k, p = _pair(exceptions, predicted)
    _, rated = _rated(p)
    out = {}
    for kind, answer in EXCEPTION_ANSWER.items():
        m = k == kind
        right = int(np.count_nonzero(m & (p == answer)))
        unrated = int(np.count_nonzero(m & ~rated))
        out[kind] = (right, int(np.count_nonzero(m)) - right - unrated, unrated)
    return out


def per_from_cells(
    cells: dict[str, tuple[int, int, int]], invalid_as: InvalidAs = "excluded"
) -> dict[str, Any]:
    tally = {
        kind: (right, right + wrong + (unrated if invalid_as == "wrong" else 0))
        for kind, (right, wrong, unrated) in cells.items()
    }  # kind -> (correct, counted)
    correct = sum(v[0] for v in tally.values())
    n = sum(v[1] for v in tally.values())
    return {
        "n": n,
        "correct": correct,
        "per": _ratio(correct, n),
        "invalid": sum(c[2] for c in cells.values()),
        **{f"per_{k}": _ratio(v[0], v[1]) for k, v in tally.items()},
        **{f"n_{k}": v[1] for k, v in tally.items()},
    }


# ---- categories ---------------------------------------------------------------------------------


def category_accuracy(
    expected: Sequence[str],
    predicted: Sequence[str | None],
    invalid_as: InvalidAs = "excluded",
) -> dict[str, Any]:
    """Exact match of canonical labels, and the original's rule: the expected label, lower-cased,
    is contained in the predicted one (so 'O1' alone does not match, extra text does)."""
    e, p = _pair(expected, predicted)
    given = np.fromiter((bool(x) for x in p), dtype=bool, count=len(p))
    invalid = int(np.count_nonzero(~given))
    n = len(p) - (invalid if invalid_as == "excluded" else 0)
    exact = int(np.count_nonzero(given & (e == p)))
    pairs = Counter(zip(e[given], p[given], strict=True))  # few distinct, however many rows
    contained = sum(k for (a, b), k in pairs.items() if a.lower() in b.lower())
    return {
        "n": n,
        "invalid": invalid,
        "exact": _ratio(exact, n),
        "containment": _ratio(contained, n),
    }


# ---- scores -------------------------------------------------------------------------------------


def floats(scores: Sequence[float | None]) -> np.ndarray:
    """Scores as a float array, NaN where there is none (None or not a number)."""
    if isinstance(scores, np.ndarray) and scores.dtype.kind == "f":
        return scores
    return np.fromiter((s if finite(s) else np.nan for s in scores), dtype=float, count=len(scores))


def scored(expected: Sequence[str], scores: Sequence[float | None]) -> tuple[np.ndarray, ...]:
    """(is Unsafe, score) of the samples with a finite score."""
    e, s = _objects(expected), floats(scores)
    if len(e) != len(s):
        raise ValueError(f"{len(e)} expected values for {len(s)} scores")
    ok = np.isfinite(s)
    return e[ok] == POSITIVE, s[ok]


def score_metrics(expected: Sequence[str], scores: Sequence[float | None], bins: int = 10) -> dict:
    """Threshold-free metrics of P(Unsafe); samples without a score are left out (counted)."""
    y, s = scored(expected, scores)
    out: dict[str, Any] = {"n": len(y), "missing": len(expected) - len(y)}
    keys = ("roc_auc", "pr_auc", "recall_at_fpr_1", "recall_at_fpr_5", "best_threshold",
            "best_balanced_accuracy", "ece")  # fmt: skip
    out.update(dict.fromkeys(keys))
    if not len(y):
        return out
    out["ece"] = expected_calibration_error(y, s, bins)
    if y.all() or not y.any():
        return out  # curves need both classes
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    out["roc_auc"] = float(roc_auc_score(y, s))
    out["pr_auc"] = float(average_precision_score(y, s))
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    for pct in (1, 5):
        ok = fpr <= pct / 100 + 1e-12
        out[f"recall_at_fpr_{pct}"] = float(tpr[ok].max())
    bal = (tpr + 1 - fpr) / 2
    best = int(np.argmax(bal[1:])) + 1  # index 0 is roc_curve's "nothing positive" point
    out["best_threshold"] = float(min(thr[best], 1.0))
    out["best_balanced_accuracy"] = float(bal[best])
    return out


def expected_calibration_error(y: np.ndarray, s: np.ndarray, bins: int = 10) -> float:
    """Equal-width bins over [0, 1]: sum over bins of (share of samples) x |mean score - share
    Unsafe|. A score of exactly 1 falls in the last bin."""
    idx = np.minimum((s * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(s[m].mean() - y[m].mean())
    return float(total)


def reliability(expected: Sequence[str], scores: Sequence[float | None], bins: int = 10) -> list:
    """[(bin low, bin high, mean score, share Unsafe, n)] for the reliability diagram."""
    y, s = scored(expected, scores)
    if not len(y):
        return []
    y = y.astype(float)
    idx = np.minimum((s * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        m = idx == b
        if m.any():
            rows.append((b / bins, (b + 1) / bins, float(s[m].mean()), float(y[m].mean()),
                         int(m.sum())))  # fmt: skip
    return rows


def finite(s: Any) -> bool:
    return isinstance(s, int | float) and math.isfinite(s)


# ---- bootstrap ----------------------------------------------------------------------------------


def bootstrap_ci(
    n: int,
    statistic: Callable[[np.ndarray], float | None],
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile interval of ``statistic(indices)`` over resamples of range(n) with
    replacement; resamples where the statistic is undefined are skipped."""
    if n == 0 or resamples <= 0:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        v = statistic(rng.integers(0, n, n))
        if v is not None and math.isfinite(v):
            values.append(v)
    if len(values) < max(10, resamples // 10):
        return None
    lo, hi = np.percentile(values, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def per_bootstrap(
    exceptions: Sequence[str | None],
    predicted: Sequence[str | None],
    invalid_as: InvalidAs,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float] | None:
    """95% interval of PER. As for the rating metrics, a resample of the rows is one
    multinomial draw of the counts PER depends on (``exception_cells``, plus the rows that
    are no exception), so a thousand resamples cost no more for a million rows than for ten."""
    cells = exception_cells(exceptions, predicted)
    flat = np.array([c for kind in EXCEPTION_ANSWER for c in cells[kind]], dtype=float)
    n = len(exceptions)
    if n == 0 or resamples <= 0:
        return None
    rng = np.random.default_rng(seed)
    probs = np.append(flat, n - flat.sum()) / n
    values = []
    for d in rng.multinomial(n, probs, size=resamples):
        drawn = {
            kind: tuple(map(int, d[3 * i : 3 * i + 3])) for i, kind in enumerate(EXCEPTION_ANSWER)
        }
        v = per_from_cells(drawn, invalid_as)["per"]
        if v is not None:
            values.append(v)
    return _percentiles(values, resamples)


def roc_auc_bootstrap(
    expected: Sequence[str],
    scores: Sequence[float | None],
    resamples: int = 300,
    seed: int = 0,
) -> tuple[float, float] | None:
    """95% interval of ROC AUC over resamples of all rows (rows without a score drawn and left
    out, as ``bootstrap_ci`` of ``score_metrics`` did, with the same draws). A resample is a
    weight per row; the AUC of weighted rows is summed over the distinct scores, sorted once,
    so each resample costs a few passes over the rows, not a sort and a curve."""
    e, s = _objects(expected), floats(scores)
    n = len(e)
    if n == 0 or resamples <= 0:
        return None
    ok = np.flatnonzero(np.isfinite(s))
    y = e[ok] == POSITIVE
    _, group = np.unique(s[ok], return_inverse=True)  # ties share a group: they count half
    groups = int(group.max()) + 1 if len(group) else 0
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        w = np.bincount(rng.integers(0, n, n), minlength=n)[ok].astype(float)
        pos = np.bincount(group, weights=w * y, minlength=groups)
        neg = np.bincount(group, weights=w * ~y, minlength=groups)
        total = pos.sum() * neg.sum()
        if total:
            below = np.cumsum(neg) - neg
            values.append(float(np.dot(pos, below + neg / 2) / total))
    return _percentiles(values, resamples)


def _percentiles(values: list[float], resamples: int) -> tuple[float, float] | None:
    """The 2.5th and 97.5th percentiles, when enough resamples had the metric defined."""
    if len(values) < max(10, resamples // 10):
        return None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def rating_bootstrap(
    expected: Sequence[str],
    predicted: Sequence[str | None],
    invalid_as: InvalidAs,
    metrics: Sequence[str] = HEADLINE,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, tuple[float, float] | None]:
    """95% intervals of rating metrics. Resampling rows only changes the confusion counts, so
    each resample is one multinomial draw of (tp, fp, tn, fn): exact and fast at any size."""
    c = counts(expected, predicted, invalid_as)
    cells = np.array([c["tp"], c["fp"], c["tn"], c["fn"]], dtype=float)
    n = int(cells.sum())
    if n == 0 or resamples <= 0:
        return dict.fromkeys(metrics)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, cells / n, size=resamples)
    out: dict[str, tuple[float, float] | None] = {}
    computed = [from_counts(*map(int, d)) for d in draws]
    for m in metrics:
        vals = [r[m] for r in computed if r[m] is not None]
        if len(vals) < max(10, resamples // 10):
            out[m] = None
            continue
        lo, hi = np.percentile(vals, [2.5, 97.5])
        out[m] = (float(lo), float(hi))
    return out
