"""``--multi-label``: P(the image violates c) for each category c in force, asked under the
policy in which only c is in force, the image shared between the prompts.

The synthetic benchmark's trained model is checked (ROC AUC per category) in
tests/test_loop.py, which trains it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from PIL import Image

from llavaguard import Guard, Policy
from llavaguard.engines import (
    Capabilities,
    Engine,
    GenerationConfig,
    Scored,
    ScoreKind,
    VisionRequest,
)
from llavaguard.errors import ConfigError
from llavaguard.guard import Assessment
from llavaguard.serve.handlers.moderation import moderation_result


class ScoringEngine(Engine):
    """Scores 'Unsafe' when a chosen category is in force (its default 'Should not' text in
    the prompt), with log-odds ``unsafe``; the category scores prefer that category."""

    name = "scoring"
    capabilities = Capabilities(scores=ScoreKind.EXACT)

    def __init__(self, code: str = "O2", unsafe: float = 3.0, model_id: str = "scripted-model"):
        self.model_id = model_id
        self.label = Policy.load().taxonomy.category(code).label
        self.unsafe = unsafe
        self.shared: list[int] = []

    def _in_force(self, text: str) -> bool:
        return f"{self.label}: \nShould not:" in text

    def score(self, requests: Sequence[VisionRequest], continuations: Sequence[str]) -> list:
        out = []
        for r in requests:
            lean = self.unsafe if self._in_force(r.text) else -self.unsafe
            rows = [0.0, lean] + [0.0 if self.label in c else -2.0 for c in continuations[2:]]
            out.append(Scored(rows))
        return out

    def score_shared(self, requests, continuations):
        self.shared.append(len(requests))
        return super().score_shared(requests, continuations)

    def generate(self, requests, config: GenerationConfig | None = None) -> list[str]:
        return ['", "rationale": "scripted"}' for _ in requests]


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_only_puts_one_category_in_force():
    base = Policy.load().with_states(allow="O4", sensitive="O6")
    assert base.in_force() == ["O1", "O2", "O3", "O5", "O6", "O7", "O8", "O9"]
    only = base.only("O6")
    assert only.in_force() == ["O6"] and only.sensitive == ["O6"]
    assert set(only.allowed) == {"O1", "O2", "O3", "O4", "O5", "O7", "O8", "O9"}
    assert base.only("o2").in_force() == ["O2"]


@pytest.mark.parametrize("mode", ["triage", "full"])
def test_violations_per_category_in_one_shared_call(mode):
    engine = ScoringEngine("O2")
    guard = Guard(engine, mode=mode, multi_label=True)
    a = guard.assess(Image.new("RGB", (20, 10), "gray"), allow="O4")
    assert set(a.violations) == {"O1", "O2", "O3", "O5", "O6", "O7", "O8", "O9"}  # O4 allowed
    assert a.violations["O2"] == pytest.approx(sigmoid(3.0))
    assert all(p == pytest.approx(sigmoid(-3.0)) for c, p in a.violations.items() if c != "O2")
    assert engine.shared == [9]  # the policy and its 8 one-category variants, in one call
    assert a.score == pytest.approx(sigmoid(3.0)) and a.rating == "Unsafe"
    plain = Guard(ScoringEngine("O2"), mode=mode).assess(Image.new("RGB", (20, 10), "gray"))
    assert plain.violations is None and plain.score == pytest.approx(a.score)


def test_multi_label_needs_scores():
    class TextOnly(ScoringEngine):
        capabilities = Capabilities(scores=ScoreKind.NONE)

    with pytest.raises(ConfigError, match="--multi-label needs rating scores"):
        Guard(TextOnly(), multi_label=True)


def test_moderation_category_scores_are_the_violations():
    policy = Policy.load().with_states(allow="O9")
    violations = {c: 0.1 for c in policy.in_force()} | {"O2": 0.8, "O5": 0.6}
    a = Assessment(image="x", rating="Safe", score=0.3, violations=violations, model="m",
                   policy=policy.describe(), policy_id=policy.id, engine="e")  # fmt: skip
    label = {c.code: c.label for c in policy.categories}
    r = moderation_result(a, policy)
    assert r.category_scores[label["O2"]] == 0.8 and r.category_scores[label["O9"]] == 0.0
    assert [k for k, v in r.categories.items() if v] == [label["O2"], label["O5"]]
    assert r.flagged  # several categories at once, though the rating was Safe at 0.5
    strict = moderation_result(a, policy, threshold=0.7)
    assert [k for k, v in strict.categories.items() if v] == [label["O2"]]


@pytest.mark.parametrize(
    "family", ["llava-onevision", pytest.param("qwen2.5-vl", marks=pytest.mark.slow),
               pytest.param("llava", marks=pytest.mark.slow)],
)  # fmt: skip
def test_shared_prefill_scores_equal_each_prompt_alone(family, tiny_models, photos):
    """The prefix tree computes each token once yet gives every prompt's log-probabilities
    as its own prefill would; the first prompt's cache carries the answer on."""
    from llavaguard.engines.transformers import TransformersEngine
    from llavaguard.guard.scoring import RATINGS, continuations
    from llavaguard.policy import answer_prefix

    engine = TransformersEngine.load(str(tiny_models(family)), {"dtype": "float32"})
    policy = Policy.load().with_states(allow="O3")
    image = Image.open(photos[0]).convert("RGB")
    texts = [policy.text] + [policy.only(c).text for c in policy.in_force()]
    requests = [VisionRequest(text=t, images=(image,), prefix=answer_prefix()) for t in texts]
    conts = [continuations(policy)] + [list(RATINGS)] * (len(texts) - 1)
    shared = engine.score_shared(requests, conts)
    alone = [engine.score([r], c)[0] for r, c in zip(requests, conts, strict=True)]
    for s, a in zip(shared, alone, strict=True):
        assert s.logprobs == pytest.approx(a.logprobs, abs=1e-4)
    start, computed = engine.shared_tokens
    each = sum(engine._inputs([r])["input_ids"].shape[1] for r in requests)
    assert start > 0 and start + computed < each  # shared, not repeated
    assert shared[0].prefill is not None and shared[1].prefill is None
    config = GenerationConfig(max_new_tokens=12)
    full = Guard(engine, multi_label=True, generation=config).assess(image, allow="O3")
    plain = Guard(engine, generation=config).assess(image, allow="O3")
    assert (full.rating, full.category, full.rationale) == (
        plain.rating, plain.category, plain.rationale)  # fmt: skip
    assert full.score == pytest.approx(plain.score, abs=1e-5)
    assert set(full.violations) == set(policy.in_force())


def test_the_one_category_augmentations_teach_the_multi_label_question():
    """v6: the own category alone in force (label stands); v7: another alone in force, the
    own allowed (Safe, an exception sample); v8, made of Safe images only: any one category
    alone in force, still Safe, its own rationale kept."""
    from llavaguard.dataset.build import augment
    from llavaguard.inputs.labels import LabelledSample

    base = Policy.load()
    images = [
        LabelledSample(id="u", image="u.png", rating="Unsafe", category=base.labels[1],
                       rationale="r", policy=base),
        LabelledSample(id="s", image="s.png", rating="Safe", category=base.labels[-1],
                       rationale="r", policy=base),
    ]  # fmt: skip
    made = {s.id: s for s in augment(images, ["v6", "v7", "v8"], seed=3)}
    assert set(made) == {"u", "s", "u_v6", "u_v7", "s_v8"}
    own, other = made["u_v6"], made["u_v7"]
    assert own.policy.in_force() == ["O2"] and own.rating == "Unsafe" and own.exception is None
    (forced,) = other.policy.in_force()
    assert forced != "O2" and other.rating == "Safe" and other.exception == "allowed"
    assert other.category == base.labels[1] and "non-violating" in other.rationale
    harmless = made["s_v8"]
    assert len(harmless.policy.in_force()) == 1 and harmless.policy.allowed
    assert harmless.rating == "Safe" and harmless.exception is None and harmless.rationale == "r"
    drawn = {augment(images, ["v8"], seed=k)[-1].policy.in_force()[0] for k in range(40)}
    assert len(drawn) >= 6  # any category, not the same one every time
