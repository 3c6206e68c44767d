"""A calibration of P(Unsafe): fitted once on labelled samples, applied to every score.

A model's P(Unsafe) ranks images well long before 0.9 means nine in ten: a fine-tuned guard
is usually over-confident. ``llavaguard calibrate`` fits a map from the model's score to a
probability (temperature scaling: one number; or isotonic regression, a monotone step curve,
where there is data enough) and, if asked, a threshold for a target false-positive rate or
recall. The file names the model and the policy (by id) it was fitted for: a score means
something only for the model that gave it, under the prompt it was given, so anything else
is refused. Fitting lives in ``evaluate.calibrate``; this module only reads and applies.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llavaguard.errors import ConfigError

SCHEMA_VERSION = 1
EPS = 1e-7  # scores are kept inside (0, 1) so their logit is finite


def logit(p: float) -> float:
    p = min(max(p, EPS), 1 - EPS)
    return math.log(p / (1 - p))


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


class Threshold(BaseModel):
    """The decision threshold on calibrated scores chosen for a target, with what it gave on
    the samples it was chosen on."""

    model_config = ConfigDict(extra="forbid")

    target: Literal["fpr", "recall"]
    value: float = Field(gt=0, lt=1)
    threshold: float = Field(gt=0, lt=1)
    fpr: float
    recall: float


class Calibration(BaseModel):
    """What ``llavaguard calibrate`` writes; ``apply`` maps a score to a probability."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_version: int = Field(SCHEMA_VERSION, alias="schema")
    model: str = Field(description="The model whose scores were fitted (its id or folder).")
    policy_id: str = Field(description="sha256 of the policy prompt the scores were given under.")
    policy: str = Field(description="The policy's name and declared exceptions.")
    method: Literal["temperature", "isotonic"]
    temperature: float = Field(gt=0, description="P = sigmoid(logit(score) / temperature).")
    isotonic: list[list[float]] | None = Field(
        None, description="Isotonic map as [score knots, probability knots] (interpolated)."
    )
    threshold: Threshold | None = None
    fitted: dict[str, Any] = Field(
        default_factory=dict, description="Samples, classes, and ECE/Brier before and after."
    )

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        p = Path(path)
        try:
            return cls.model_validate(json.loads(p.read_text()))
        except FileNotFoundError:
            raise ConfigError(f"{p}: no such calibration file") from None
        except (OSError, ValueError) as e:
            first = e.errors()[0] if isinstance(e, ValidationError) else None
            why = (f"{'.'.join(map(str, first['loc']))}: {first['msg']}" if first
                   else "not JSON")  # fmt: skip
            raise ConfigError(f"{p}: not a llavaguard calibration ({why})") from None

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.model_dump_json(by_alias=True, indent=2) + "\n")
        return p

    def apply(self, score: float) -> float:
        """The calibrated probability of a raw P(Unsafe)."""
        if self.method == "isotonic" and self.isotonic is not None:
            return _interp(score, *self.isotonic)
        return sigmoid(logit(score) / self.temperature)

    def check(self, model: str, policy_id: str, policy: str = "") -> None:
        """Refuse, in one line, scores of another model or under another policy."""
        if not same_model(self.model, model):
            raise ConfigError(
                f"this calibration was fitted for model {self.model}, not {model}: "
                "fit one for this model with 'llavaguard calibrate'"
            )
        if policy_id != self.policy_id:
            shown = f" ({policy})" if policy else ""
            raise ConfigError(
                f"this calibration was fitted under policy {self.policy} "
                f"[{self.policy_id[:12]}], not {policy_id[:12]}{shown}: scores under another "
                "policy prompt need their own calibration"
            )


def same_model(a: str, b: str) -> bool:
    """One model named two ways (a folder given relative or absolute) is the same model."""
    if a == b:
        return True
    pa, pb = Path(a), Path(b)
    return pa.is_dir() and pb.is_dir() and pa.resolve() == pb.resolve()


def _interp(x: float, xs: list[float], ys: list[float]) -> float:
    """Piecewise-linear through the knots, flat outside them (numpy's interp, without numpy
    in the Guard's import path)."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    lo, hi = 0, len(xs) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if xs[mid] <= x else (lo, mid)
    span = xs[hi] - xs[lo]
    t = 0.0 if span == 0 else (x - xs[lo]) / span
    return ys[lo] + t * (ys[hi] - ys[lo])
