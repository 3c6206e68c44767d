"""What a calibration does on held-out samples: ``evaluate run --calibration``.

Scores before and after the map, on the evaluated samples under its policy: ECE, Brier, both
reliability diagrams, and what its threshold gives there. The samples it was fitted on
should not be among them; the figures are only honest on samples it has not seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llavaguard.errors import ConfigError
from llavaguard.evaluate import metrics as M
from llavaguard.guard.calibration import Calibration


def figures(y: np.ndarray, q: np.ndarray, bins: int) -> dict[str, float]:
    """ECE and Brier score of probabilities ``q`` for labels ``y`` (1 = Unsafe)."""
    return {"ece": M.expected_calibration_error(y, q, bins),
            "brier": float(np.mean((q - y) ** 2))}  # fmt: skip


def held_out(rows: list[Any], path: Path, bins: int = 10) -> dict[str, Any]:
    """ECE and Brier of the scores before and after the calibration in ``path``, on the
    evaluated samples under its policy (the samples it was fitted on should not be here),
    with both reliability diagrams and what its threshold gives on them."""
    from llavaguard.guard.calibration import same_model

    cal = Calibration.load(path)
    under = [r for r in rows if r.score is not None and r.sample.policy.id == cal.policy_id]
    if not under:
        raise ConfigError(f"{path}: no evaluated sample with a score is under its policy "
                          f"({cal.policy})")  # fmt: skip
    models = {r.prediction.model for r in under} - {None}
    other = sorted(m for m in models if not same_model(cal.model, m))
    if other:
        raise ConfigError(f"{path} was fitted for model {cal.model}, not {other[0]}")
    expected = [r.sample.rating for r in under]
    y = np.array([e == "Unsafe" for e in expected], dtype=int)
    p = np.array([r.score for r in under], dtype=float)
    q = np.array([cal.apply(s) for s in p])
    out: dict[str, Any] = {
        "file": str(path), "method": cal.method, "policy": cal.policy, "samples": len(under),
        "before": figures(y, p, bins), "after": figures(y, q, bins),
        "reliability": {"before": M.reliability(expected, list(p), bins),
                        "after": M.reliability(expected, list(q), bins)},
    }  # fmt: skip
    if cal.threshold is not None:
        unsafe = q >= cal.threshold.threshold
        out["threshold"] = {**cal.threshold.model_dump(), "held_out": {
            "fpr": float(unsafe[y == 0].mean()) if (y == 0).any() else None,
            "recall": float(unsafe[y == 1].mean()) if (y == 1).any() else None}}  # fmt: skip
    return out
