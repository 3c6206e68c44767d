"""Evaluation: score any safeguard's predictions against a labelled set, the way the LlavaGuard
paper did and beyond (score metrics, intervals, policy generalisation), and compare runs.

Flow: ``inputs.labels`` (labelled samples; ``inputs.benchmarks`` reads public benchmarks as
such) -> ``data`` (predictions, join) -> ``metrics`` (pure functions) -> ``run`` (one
evaluation) -> ``report`` / ``plots`` (files) -> ``compare`` (runs side by side).
``variants`` makes the policy-generalisation samples.
"""

from llavaguard.evaluate.compare import comparison, load_run
from llavaguard.evaluate.data import Prediction, join, load_predictions
from llavaguard.evaluate.run import EvalConfig, compute, evaluate
from llavaguard.evaluate.variants import KINDS as VARIANT_KINDS
from llavaguard.evaluate.variants import make_variants

__all__ = [
    "VARIANT_KINDS",
    "EvalConfig",
    "Prediction",
    "comparison",
    "compute",
    "evaluate",
    "join",
    "load_predictions",
    "load_run",
    "make_variants",
]
