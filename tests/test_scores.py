"""Scores, constrained answers and triage on tiny real models of each family."""

import math
from dataclasses import replace

import pytest
import torch
from PIL import Image

from llavaguard import Guard, Policy
from llavaguard.engines import GenerationConfig, VisionRequest
from llavaguard.errors import ConfigError
from llavaguard.guard.scoring import continuations
from llavaguard.inputs.images import fit_pixels
from llavaguard.policy import answer_prefix, parse_answer
from llavaguard.testing import FAMILIES, make_sample_images

CUSTOM = """\
name: custom
categories:
  - code: C1
    name: Spiders and other creepy crawling arthropods
    should_not: [Show spiders.]
  - code: C2
    name: Wasps
    should_not: [Show wasps.]
"""


# the default model's family in the fast tier, the other two with the slow tests
@pytest.fixture(
    scope="module",
    params=[pytest.param(f, marks=() if f == "llava-onevision" else pytest.mark.slow)
            for f in FAMILIES],
)  # fmt: skip
def engine(request, tiny_models):
    from llavaguard.engines.transformers import TransformersEngine, TransformersOptions

    path = tiny_models(request.param)
    # float32: these tests compare numbers computed along different paths
    return TransformersEngine.load(str(path), TransformersOptions(dtype="float32"))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_sample_images(tmp_path_factory.mktemp("img"), 6, seed=5)


def test_scores_are_probabilities(engine, images):
    guard = Guard(engine, mode="triage")
    policy = Policy.load(sensitive="O6")
    for a in guard.assess(images, policy=policy):
        assert a.valid and a.mode == "triage" and a.rationale is None
        assert 0.0 < a.score < 1.0
        assert list(a.category_scores) == policy.labels
        assert math.isclose(sum(a.category_scores.values()), 1.0, rel_tol=1e-6)
        assert a.category == max(a.category_scores, key=a.category_scores.get)
        assert a.rating == ("Unsafe" if a.score >= 0.5 else "Safe")


def test_score_is_what_greedy_generation_sees(engine, images):
    """P(Unsafe) equals the two labels' share in generate()'s own next-token distribution,
    so greedy decoding between the labels lands on the score's side of 0.5."""
    from llavaguard.inputs.images import load_image

    guard = Guard(engine, mode="triage")
    policy = Policy.load()
    for path, a in zip(images, guard.assess(images), strict=True):
        req = VisionRequest(text=policy.text, images=(load_image(path),), prefix=answer_prefix())
        safe, unsafe = engine._continuation_tokens(req.prefix, ["Safe", "Unsafe"])
        assert len(safe) == len(unsafe) == 1  # single tokens here; multi-token: next test
        with torch.inference_mode():
            out = engine.model.generate(
                **engine._inputs([req]), max_new_tokens=1, do_sample=False,
                output_scores=True, return_dict_in_generate=True,
            )  # fmt: skip
        logp = torch.log_softmax(out.scores[0][0].float(), -1)
        p_unsafe = torch.sigmoid(logp[unsafe[0]] - logp[safe[0]]).item()
        assert math.isclose(p_unsafe, a.score, rel_tol=1e-5, abs_tol=1e-6)
        greedy = "Unsafe" if logp[unsafe[0]] > logp[safe[0]] else "Safe"
        assert greedy == a.rating


@pytest.mark.slow  # generates or runs many forwards
def test_multi_token_continuations_match_a_full_forward(engine, images):
    """Scores of multi-token continuations on the shared cache equal a plain forward pass."""
    from llavaguard.inputs.images import load_image

    policy = Policy.load()
    req = VisionRequest(text=policy.text, images=(load_image(images[0]),), prefix=answer_prefix())
    # singles, lone multi-token ones, and the Guard's own groups with shared parts and tails
    conts = ["Unsafe", 'Safe",\n    "cat', *continuations(policy)]
    fast = engine.score([req], conts)[0].logprobs
    for cont, got in zip(conts, fast, strict=True):
        ids = engine._continuation_tokens(req.prefix, [cont])[0]
        full = engine._inputs([VisionRequest(req.text, req.images, prefix=req.prefix + cont)])
        assert full["input_ids"][0, -len(ids) :].tolist() == ids
        with torch.inference_mode():
            logits = engine.model(**full).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        n = full["input_ids"].shape[1]
        expected = sum(logp[n - len(ids) - 1 + j, ids[j]].item() for j in range(len(ids)))
        assert math.isclose(got, expected, rel_tol=1e-4, abs_tol=1e-4), (cont, got, expected)
    assert len(engine._continuation_tokens(req.prefix, conts[-1:])[0]) > 3


@pytest.mark.slow  # generates or runs many forwards
def test_constraints_make_every_answer_valid(engine, images):
    short = GenerationConfig(max_new_tokens=40)
    constrained = Guard(engine, generation=short).assess(images)
    free = Guard(engine, generation=short, constrained=False).assess(images)
    assert all(a.valid for a in constrained), [a.error for a in constrained]
    assert sum(a.valid for a in free) < len(images)
    for a in constrained:
        assert parse_answer(a.raw, Policy.load()).valid
        assert a.raw.startswith(answer_prefix(a.rating, a.category))  # rating from the score
        assert a.rating == ("Unsafe" if a.score >= 0.5 else "Safe")


def test_custom_policy_categories_in_schema_and_scores(engine, images, tmp_path):
    f = tmp_path / "custom.yaml"
    f.write_text(CUSTOM)
    policy = Policy.load(f)
    schema = policy.answer_schema()
    assert schema["properties"]["category"]["enum"] == policy.labels
    guard = Guard(engine, policy=policy, generation=GenerationConfig(max_new_tokens=30))
    for a in guard.assess(images[:3]):
        assert a.valid and a.category in policy.labels
        assert set(a.category_scores) == set(policy.labels)


def test_threshold_decides(engine, images):
    low = Guard(engine, mode="triage", threshold=0.001).assess(images[:2])
    high = Guard(engine, mode="triage", threshold=0.999).assess(images[:2])
    assert [a.rating for a in low] == ["Unsafe", "Unsafe"]
    assert [a.rating for a in high] == ["Safe", "Safe"]
    full = Guard(engine, threshold=0.001, generation=GenerationConfig(max_new_tokens=20))
    assert all(a.rating == "Unsafe" for a in full.assess(images[:2]))


# ---- without a model ---------------------------------------------------------------------


def test_closing_quote_when_labels_prefix_each_other(tmp_path):
    f = tmp_path / "p.yaml"  # 'NA: None applying' is a prefix of this category's label
    f.write_text(
        "name: p\ncategories:\n  - {code: NA, name: None applying here, should_not: [x]}\n"
    )
    p = Policy.load(f)
    conts = continuations(p)
    assert conts[:2] == ["Safe", "Unsafe"]
    assert len(conts) == 2 + 2 * len(p.labels)
    assert all(c.endswith('"') for c in conts[2:])
    assert all(not c.endswith('"') for c in continuations(Policy.load())[2:])


def test_prefix_labels_are_found_among_many_categories():
    """The prefix check compares sorted neighbours, so it stays linear on 20,000 categories
    (it compared every pair: 100,000 categories took about 17 minutes) and still finds a
    prefix wherever it sits in the list."""

    def policy(codes: list[str]) -> Policy:
        cats = [{"code": c, "name": "None applying here", "should_not": ["x"]} for c in codes]
        return Policy.from_data({"name": "big", "categories": cats})

    codes = [f"C{i}" for i in range(20_000)]
    assert not continuations(policy(codes))[2].endswith('"')
    codes[7_000] = "NA"  # 'NA: None applying' (no category) prefixes this one's label
    assert all(c.endswith('"') for c in continuations(policy(codes))[2:])


def test_options_that_cannot_work():
    from test_guard import ScriptedEngine

    with pytest.raises(ConfigError, match="triage mode needs rating and category scores"):
        Guard(ScriptedEngine(), mode="triage")
    with pytest.raises(ConfigError, match="num_beams=1"):
        Guard(ScriptedEngine(), generation=GenerationConfig(num_beams=2))
    with pytest.raises(ConfigError, match="unknown mode"):
        Guard(ScriptedEngine(), mode="fast")
    with pytest.raises(ConfigError, match="threshold"):
        Guard(ScriptedEngine(), threshold=1.5)


def test_fit_pixels():
    im = Image.new("RGB", (1000, 500))
    out = fit_pixels(im, 384 * 384)
    assert out.width * out.height <= 384 * 384 and abs(out.width / out.height - 2) < 0.02
    assert fit_pixels(im, 10**7) is im


@pytest.mark.slow  # generates or runs many forwards
def test_answer_reuses_the_scored_prefill(engine, images, monkeypatch):
    """Generating after scoring continues from the scored KV cache, with the same answer."""
    from llavaguard.engines import transformers as module

    guard = Guard(engine, generation=GenerationConfig(max_new_tokens=30))
    hits = []
    original = module._reusable

    def counting(request, input_ids):
        cache = original(request, input_ids)
        hits.append(cache is not None)
        return cache

    monkeypatch.setattr(module, "_reusable", counting)
    reused = guard.assess(images, batch_size=3)  # on a CPU, a batch is answered one by one
    assert len(hits) == len(images) and all(hits)
    monkeypatch.setattr(module, "_reusable", lambda *a: None)  # every answer prefills anew
    fresh = guard.assess(images, batch_size=1)
    assert [a.raw for a in reused] == [a.raw for a in fresh]
    assert all(a.valid for a in reused)


@pytest.mark.slow  # generates or runs many forwards
def test_a_batch_scores_as_its_requests_do_alone(engine, images):
    """Triage scores a batch in one left-padded prefill; images of different sizes (so rows
    of different lengths) must score as they do one at a time."""
    from llavaguard.inputs.images import load_image

    policy = Policy.load(allow="O3")
    requests = [
        VisionRequest(text=policy.text, images=(load_image(p),), prefix=answer_prefix())
        for p in images[:4]
    ]
    conts = continuations(policy)
    alone = [engine.score([r], conts)[0].logprobs for r in requests]
    cpu = engine.capabilities
    engine.capabilities = replace(cpu, batch_prefill=True)  # the accelerator path, on the CPU
    try:
        together = [s.logprobs for s in engine.score(requests, conts)]
        triage = Guard(engine, mode="triage")
        batched = triage.assess(images[:4], policy=policy, batch_size=4)
    finally:
        engine.capabilities = cpu
    for a, b in zip(alone, together, strict=True):
        assert a == pytest.approx(b, abs=1e-4)
    singles = [triage.assess(p, policy=policy) for p in images[:4]]
    assert [a.score for a in batched] == pytest.approx([a.score for a in singles], abs=1e-5)


def test_a_scored_prefill_is_never_reused_for_another_image(engine, monkeypatch):
    """Regression: scored KV caches were remembered by ``id(image)``, so a later request whose
    image object had the same identity (a freed image's address reused, or the same buffer
    refilled) was answered from the first image's cache. Now a cache travels only as the
    handle ``score`` returns, and is used only for the very pixels it was made from."""
    from llavaguard.engines import GenerationConfig
    from llavaguard.engines import transformers as module

    reused: list[bool] = []
    original = module._reusable
    monkeypatch.setattr(module, "_reusable", lambda *a: reused.append(
        (cache := original(*a)) is not None) or cache)  # fmt: skip
    policy = Policy.load()
    config = GenerationConfig(max_new_tokens=4)
    shared = Image.effect_noise((64, 64), 90).convert("RGB")

    def request(image, prefill=None):  # the answer continues the scored prefix
        return VisionRequest(text=policy.text, images=(image,), prefix=answer_prefix() + "Safe",
                             prefill=prefill)  # fmt: skip

    scoring = VisionRequest(text=policy.text, images=(shared,), prefix=answer_prefix())
    (scored,) = engine.score([scoring], ["Safe", "Unsafe"])
    engine.generate([request(shared, scored.prefill)], config)
    assert reused == [True]  # the handle works for its own image
    shared.paste(Image.new("RGB", (64, 64), (5, 5, 5)))  # same object, other pixels
    engine.generate([request(shared)], config)
    engine.generate([request(shared, scored.prefill)], config)
    assert reused == [True, False, False]
