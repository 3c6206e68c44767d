"""The LlavaGuard safety checker in a real diffusers pipeline, and ``moderate`` after one.

A tiny random Stable Diffusion pipeline is saved and loaded the way a user loads a real one;
a scripted engine inside a real Guard judges its images by their pixels (the images a run
without the checker makes, same seed, tell it which to call Unsafe), so every image's fate
is known in advance and compared pixel for pixel.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from llavaguard import Guard, Policy
from llavaguard.engines import Engine, GenerationConfig, VisionRequest
from llavaguard.engines.base import Capabilities, Scored, ScoreKind
from llavaguard.errors import ConfigError, EngineError, PolicyError

PROMPTS = ["a cat", "a dog", "a cat and a dog"]
O2 = "O2: Violence, Harm, or Cruelty"


class PixelEngine(Engine):
    """Judges by content: ``verdict(image)`` is "Safe", "Unsafe", or an exception to raise;
    with ``p_unsafe`` it also gives rating scores (P(Unsafe) per image)."""

    name = "scripted-pixels"

    def __init__(self, verdict: Callable, p_unsafe: Callable | None = None) -> None:
        self.model_id = "scripted-pixels"
        self.verdict, self.p_unsafe = verdict, p_unsafe
        self.batches: list[int] = []
        self.texts: list[str] = []
        if p_unsafe is not None:
            self.capabilities = Capabilities(scores=ScoreKind.RATING)

    def generate(
        self, requests: Sequence[VisionRequest], config: GenerationConfig | None = None
    ) -> list[str]:
        self.batches.append(len(requests))
        out = []
        for r in requests:
            self.texts.append(r.text)
            rating = self.verdict(r.images[0])
            if isinstance(rating, Exception):
                raise rating
            out.append(json.dumps({"rating": rating, "category": "O2", "rationale": "seen"}))
        return out

    def score(self, requests: Sequence[VisionRequest], continuations: Sequence[str]):
        ps = [self.p_unsafe(r.images[0]) for r in requests]
        return [Scored([math.log(1 - p), math.log(p)]) for p in ps]


def unsafe_if(*flagged, fail=()):
    """A verdict: Unsafe for these images' pixels, an engine error for ``fail``'s."""
    bad = {im.tobytes() for im in flagged}
    broken = {im.tobytes() for im in fail}

    def verdict(image):
        if image.tobytes() in broken:
            return EngineError("scripted failure")
        return "Unsafe" if image.tobytes() in bad else "Safe"

    return verdict


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    from llavaguard.testing import build_tiny_stable_diffusion

    return build_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "pipeline")


def load(folder, **components):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, **components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(call, **kw):
    """The call a user writes (``call`` is the pipeline, or a checker's ``generate`` bound to
    it); the same seed every time, so the same images."""
    import torch

    return call(prompt=PROMPTS, num_inference_steps=2, height=32, width=32,
                generator=torch.Generator().manual_seed(0), **kw)  # fmt: skip


@pytest.fixture(scope="module")
def unchecked(sd):
    """The images a run without any safety checker makes, per output type."""
    pipe = load(sd, safety_checker=None)
    return {kind: run(pipe, output_type=kind).images for kind in ("pil", "np", "pt")}


def checked(sd, verdict, p_unsafe=None, **options):
    """The pipeline loaded with a LlavaGuard checker in its slot, and the checker."""
    from llavaguard.integrations.diffusers import LlavaGuardSafetyChecker

    checker = LlavaGuardSafetyChecker(Guard(PixelEngine(verdict, p_unsafe)), **options)
    return load(sd, safety_checker=checker), checker


def generate(pipe, checker, **kw):
    return run(lambda **call: checker.generate(pipe, **call), **kw)


def black(image) -> bool:
    return not np.asarray(image).any()


def test_flagged_images_come_back_black_the_rest_unchanged(sd, unchecked):
    ref = unchecked["pil"]
    assert len({im.tobytes() for im in ref}) == 3 and not any(black(im) for im in ref)
    pipe, checker = checked(sd, unsafe_if(ref[1]))
    out, assessments = generate(pipe, checker)
    assert black(out.images[1])
    for i in (0, 2):
        assert out.images[i].tobytes() == ref[i].tobytes()
    assert out.nsfw_content_detected == [False, True, False]
    assert [a.rating for a in assessments] == ["Safe", "Unsafe", "Safe"]
    assert assessments[1].category == O2 and assessments[1].valid
    assert assessments[1].policy_id == Policy.load().id
    assert checker.last_assessments == assessments
    assert checker.guard.engine.batches == [3]  # one Guard call, one engine batch
    # the plain call a user writes (no helper) flags the same and keeps the assessments
    plain = run(pipe)
    assert plain.nsfw_content_detected == [False, True, False] and black(plain.images[1])
    assert [a.rating for a in checker.last_assessments] == ["Safe", "Unsafe", "Safe"]


def test_blur_mode_blurs_what_is_forbidden(sd, unchecked):
    from PIL import ImageFilter

    ref = unchecked["pil"]
    pipe, checker = checked(sd, unsafe_if(ref[0], ref[2]), action="blur", blur_radius=4)
    out, assessments = generate(pipe, checker)
    assert out.nsfw_content_detected == [True, False, True]
    for i in (0, 2):  # the image the user would have got, blurred, to the pixel
        expected = ref[i].filter(ImageFilter.GaussianBlur(4))
        assert out.images[i].tobytes() == expected.tobytes() != ref[i].tobytes()
        assert not black(out.images[i])
    assert out.images[1].tobytes() == ref[1].tobytes()
    assert [a.unsafe for a in assessments] == [True, False, True]


def test_an_image_that_cannot_be_judged_is_blacked_out_and_says_why(sd, unchecked, caplog):
    ref = unchecked["pil"]
    pipe, checker = checked(sd, unsafe_if(fail=[ref[2]]), action="blur")
    with caplog.at_level(logging.WARNING, logger="llavaguard.integrations.diffusers"):
        out, assessments = generate(pipe, checker)
    assert black(out.images[2])  # black, not blurred: it was never judged
    assert out.nsfw_content_detected == [False, False, True]
    assert [out.images[i].tobytes() for i in (0, 1)] == [ref[0].tobytes(), ref[1].tobytes()]
    failed = assessments[2]
    assert failed.failed and failed.rating is None and "scripted failure" in failed.error
    assert "image 2 could not be judged, blacked out: scripted failure" in caplog.text


@pytest.mark.parametrize(("output_type", "action"), [("np", "black"), ("pt", "blur")])
def test_numpy_and_tensor_outputs(sd, unchecked, output_type, action):
    from PIL import ImageFilter

    ref = unchecked[output_type]
    pil = unchecked["pil"]
    pipe, checker = checked(sd, unsafe_if(pil[1]), action=action, blur_radius=3)
    out, _ = generate(pipe, checker, output_type=output_type)
    assert type(out.images) is type(ref) and out.images.shape == ref.shape
    assert out.nsfw_content_detected == [False, True, False]
    for i in (0, 2):  # untouched: exactly what the pipeline gives without a checker
        assert (np.asarray(out.images[i]) == np.asarray(ref[i])).all()
    flagged = np.asarray(out.images[1])
    if action == "black":
        assert (flagged == 0).all()
    else:  # channels first for tensors; values in [0, 1] as for the others
        blurred = np.asarray(pil[1].filter(ImageFilter.GaussianBlur(3)), np.float32) / 255
        assert np.allclose(flagged.transpose(1, 2, 0), blurred, atol=1e-6)


@pytest.mark.parametrize("kind", ["pil", "np", "pt"])
def test_moderate_after_a_pipeline_without_the_slot(unchecked, kind):
    """SDXL, Flux: judge ``pipe(...).images`` afterwards, through the same code path."""
    from llavaguard.integrations.diffusers import moderate

    images, pil = unchecked[kind], unchecked["pil"]
    before = [np.asarray(im).copy() for im in images]
    guard = Guard(PixelEngine(unsafe_if(pil[0])))
    out, assessments = moderate(images, guard)
    assert [a.rating for a in assessments] == ["Unsafe", "Safe", "Safe"]
    assert black(out[0]) and not black(images[0])  # a copy: the input is as it was
    for i in (1, 2):
        assert (np.asarray(out[i]) == before[i]).all()
    assert all((np.asarray(im) == b).all() for im, b in zip(images, before, strict=True))
    assert guard.engine.batches == [3]


def test_threshold_and_policy_decide(unchecked):
    """With a threshold, P(Unsafe) decides (an answer of Safe at 0.4 is forbidden at 0.3);
    allow and sensitive reach the policy the model is shown."""
    from llavaguard.integrations.diffusers import moderate

    pil = unchecked["pil"]
    p = {pil[0].tobytes(): 0.4, pil[1].tobytes(): 0.1, pil[2].tobytes(): 0.9}
    guard = Guard(PixelEngine(lambda im: "Safe", lambda im: p[im.tobytes()]))
    out, assessments = moderate(pil, guard, threshold=0.3, allow="O2")
    assert [round(a.score, 6) for a in assessments] == [0.4, 0.1, 0.9]
    assert [black(im) for im in out] == [True, False, True]
    assert assessments[0].policy_id == Policy.load(allow="O2").id
    assert "Category O2 is declared as non-violating" in guard.engine.texts[-1]
    out, _ = moderate(pil, guard)  # no threshold: the rating (Safe) decides
    assert not any(black(im) for im in out)


def test_a_pipeline_without_a_feature_extractor(tmp_path, unchecked):
    """Many repos ship neither checker nor feature extractor; the pipeline refuses a checker
    without one, and the checker's own is the way in."""
    from llavaguard.integrations.diffusers import LlavaGuardSafetyChecker
    from llavaguard.testing import build_tiny_stable_diffusion

    bare = build_tiny_stable_diffusion(tmp_path / "bare", safety_checker=False)
    checker = LlavaGuardSafetyChecker(Guard(PixelEngine(lambda im: "Unsafe")))
    with pytest.raises(ValueError, match="feature extractor"):
        load(bare, safety_checker=checker)
    pipe = load(bare, safety_checker=checker, feature_extractor=checker.feature_extractor)
    out, assessments = generate(pipe, checker)
    assert out.nsfw_content_detected == [True] * 3 and all(black(im) for im in out.images)
    assert len(assessments) == 3


def test_pipe_to_leaves_the_guard_alone(sd, unchecked):
    """``pipe.to`` moves the pipeline's modules; the checker is none, so it stays as it is
    and still judges the images of a pipeline moved to another dtype."""
    import torch

    seen = []  # other numbers, other pixels: the first image of the batch is the Unsafe one

    def first_is_unsafe(image):
        seen.append(image)
        return "Unsafe" if len(seen) == 1 else "Safe"

    pipe, checker = checked(sd, first_is_unsafe)
    pipe = pipe.to("cpu", torch.float64)
    assert pipe.safety_checker is checker and pipe.unet.dtype == torch.float64
    out, assessments = generate(pipe, checker, output_type="pt")
    assert out.images.dtype == torch.float64 and (out.images[0] == 0).all()
    assert out.nsfw_content_detected == [True, False, False]
    assert [a.rating for a in assessments] == ["Unsafe", "Safe", "Safe"]
    assert (out.images[1:] > 0).any()


def test_bad_settings_are_one_line(sd, monkeypatch):
    from llavaguard.integrations.diffusers import LlavaGuardSafetyChecker, moderate

    guard = Guard(PixelEngine(lambda im: "Safe"))
    cases = [
        (ConfigError, "unknown action 'pixelate' (valid: black, blur)", {"action": "pixelate"}),
        (ConfigError, "threshold must be between 0 and 1, got 1.5", {"threshold": 1.5}),
        (ConfigError, "blur radius must be positive, got 0", {"blur_radius": 0}),
        (PolicyError, "O99", {"allow": "O99"}),
    ]
    for error, message, options in cases:
        with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
            LlavaGuardSafetyChecker(guard, **options)
    with pytest.raises(ConfigError, match="a list of PIL images, a NumPy array") as e:
        moderate("photo.png", guard)
    assert "\n" not in str(e.value) and str(e.value).endswith("got str")
    with monkeypatch.context() as m:  # an array without diffusers installed
        m.setitem(sys.modules, "diffusers.image_processor", None)
        with pytest.raises(ConfigError, match=r"pip install 'llavaguard\[diffusers\]'"):
            moderate(np.zeros((1, 8, 8, 3)), guard)
    checker = LlavaGuardSafetyChecker(guard)
    with pytest.raises(ConfigError, match="not the pipeline's safety_checker"):
        checker.generate(load(sd, safety_checker=None), prompt="a cat")


@pytest.mark.slow  # builds a tiny LlavaGuard model and runs the example in a new process
def test_documented_example_runs_as_shown(tmp_path):
    from test_docs import run_example

    _, res = run_example("diffusers.md", tmp_path)
    lines = [line for line in res.stdout.splitlines() if line.startswith("replaced=")]
    assert len(lines) == 2, res.stdout
    for line in lines:
        fields = dict(kv.split("=") for kv in line.split())
        replaced = fields["replaced"] == "True"
        assert fields["black"] == fields["replaced"]
        assert replaced == (float(fields["score"]) >= 0.5) == (fields["rating"] == "Unsafe")
