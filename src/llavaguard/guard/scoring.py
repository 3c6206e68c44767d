"""From continuation log-probabilities to P(Unsafe) and per-category probabilities.

The Guard asks the engine for the log-probability of every answer start it cares about,
right after ``{"rating": "`` (in the trained indent-4 layout): ``Safe``, ``Unsafe``, and each
rating followed by each category label. One prefill serves them all. This module turns
those numbers into probabilities; it knows the answer layout, not the engine.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass

from llavaguard.policy import Policy, answer_prefix

RATINGS = ("Safe", "Unsafe")


@dataclass(frozen=True)
class Scores:
    p_unsafe: float
    category_scores: dict[str, dict[str, float]] | None  # rating -> label -> P(label | rating)

    def rating(self, threshold: float = 0.5) -> str:
        return "Unsafe" if self.p_unsafe >= threshold else "Safe"

    def best_category(self, rating: str) -> str | None:
        if self.category_scores is None:
            return None
        scores = self.category_scores[rating]
        return max(scores, key=scores.__getitem__)


def continuations(policy: Policy) -> list[str]:
    """What follows the rating prefix: the two ratings, then rating + category for each pair.

    A closing quote is added to labels when one label is a prefix of another, so every
    label is scored as a whole string. Sorted, a label that prefixes another prefixes its
    next neighbour, so checking neighbours is enough (linear, not quadratic, in labels).
    """
    labels = [json.dumps(label)[1:-1] for label in policy.labels]
    ordered = sorted(set(labels))
    closing = '"' if any(b.startswith(a) for a, b in itertools.pairwise(ordered)) else ""
    start = len(answer_prefix())
    out = list(RATINGS)
    for rating in RATINGS:
        lead = answer_prefix(rating)[start:]
        out += [lead + label + closing for label in labels]
    return out


def _softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def scores_from_logprobs(policy: Policy, logprobs: list[float]) -> Scores:
    """Normalise: P(Unsafe) against Safe, and P(category | rating) over the policy's labels.

    Given the two ratings' log-probabilities only, the category scores stay None.
    """
    n = len(policy.labels)
    safe, unsafe = logprobs[0], logprobs[1]
    p_unsafe = 1.0 / (1.0 + math.exp(safe - unsafe))
    if len(logprobs) == 2:
        return Scores(p_unsafe=p_unsafe, category_scores=None)
    per_rating = {}
    for k, rating in enumerate(RATINGS):
        block = logprobs[2 + k * n : 2 + (k + 1) * n]
        per_rating[rating] = dict(zip(policy.labels, _softmax(block), strict=True))
    return Scores(p_unsafe=p_unsafe, category_scores=per_rating)
