"""Evaluation: score any safeguard's predictions against a labelled set, the way the LlavaGuard
paper did and beyond (score metrics, intervals, policy generalisation), and compare runs.

Flow: ``data`` (labels, predictions, join) -> ``metrics`` (pure functions) -> ``run``
(one evaluation) -> ``report`` / ``plots`` (files) -> ``compare`` (runs side by side).
``variants`` makes the policy-generalisation samples.
"""

from llavaguard.evaluate.compare import comparison, load_run
from llavaguard.evaluate.data import (
    LabelledSample,
    Prediction,
    join,
    load_labels,
    load_predictions,
    policy_from_prompt,
)
from llavaguard.evaluate.run import EvalConfig, compute, evaluate
from llavaguard.evaluate.variants import KINDS as VARIANT_KINDS
from llavaguard.evaluate.variants import make_variants

__all__ = [
    "VARIANT_KINDS",
    "EvalConfig",
    "LabelledSample",
    "Prediction",
    "comparison",
    "compute",
    "evaluate",
    "join",
    "load_labels",
    "load_predictions",
    "load_run",
    "make_variants",
    "policy_from_prompt",
]
