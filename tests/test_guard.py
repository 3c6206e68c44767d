"""Pipeline tests of the Guard with a scripted engine: order, errors, policies, batching.

The model's answers do not matter here; the real engine is tested end to end elsewhere.
"""

import json
from collections.abc import Sequence

import pytest
from PIL import Image

from llavaguard import Guard, Policy
from llavaguard.engines import Engine, GenerationConfig, VisionRequest
from llavaguard.errors import ConfigError, EngineError


class ScriptedEngine(Engine):
    """Answers Unsafe for wide images, Safe otherwise; chokes on 13-px-wide images."""

    name = "scripted"

    def __init__(self) -> None:
        self.model_id = "scripted-model"
        self.batches: list[int] = []
        self.texts: list[str] = []

    def generate(
        self, requests: Sequence[VisionRequest], config: GenerationConfig | None = None
    ) -> list[str]:
        self.batches.append(len(requests))
        out = []
        for r in requests:
            self.texts.append(r.text)
            (img,) = r.images
            if img.width == 13:
                raise EngineError("scripted failure")
            rating = "Unsafe" if img.width > img.height else "Safe"
            out.append(
                json.dumps({"rating": rating, "category": "O2", "rationale": f"w={img.width}"})
            )
        return out


@pytest.fixture
def guard():
    return Guard(ScriptedEngine())


def img(w, h):
    return Image.new("RGB", (w, h), "gray")


def test_single_and_many(guard):
    one = guard.assess(img(20, 10))
    assert one.rating == "Unsafe" and one.category == "O2: Violence, Harm, or Cruelty"
    assert one.valid and one.policy_id == Policy.load().id and one.engine == "scripted"
    many = guard.assess([img(20, 10), img(10, 20), img(30, 10)], batch_size=2)
    assert [a.rating for a in many] == ["Unsafe", "Safe", "Unsafe"]
    assert [a.image for a in many] == ["image-0", "image-1", "image-2"]
    assert guard.engine.batches[-2:] == [2, 1]


def test_bad_inputs_and_engine_failures_stay_on_their_record(guard, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    good = tmp_path / "good.png"
    img(20, 10).save(good)
    results = guard.assess([str(good), str(bad), img(13, 10), img(10, 20)], batch_size=4)
    assert [a.image for a in results] == [str(good), str(bad), "image-2", "image-3"]
    ok, broken, choked, fine = results
    assert ok.valid and fine.valid and fine.rating == "Safe"
    assert broken.failed and broken.raw is None and str(bad) in broken.error
    assert choked.failed and "scripted failure" in choked.error
    # the batch of 3 loaded images failed as a whole, then each was tried alone
    assert guard.engine.batches == [3, 1, 1, 1]


def test_policy_per_call(guard):
    a = guard.assess(img(5, 5), allow="O2")
    assert a.policy_id == Policy.load(allow="O2").id
    assert a.policy == "llavaguard-v1.2 (allow O2)"
    assert "Category O2 is declared as non-violating" in guard.engine.texts[-1]


def test_ids_and_bad_batch_size(guard):
    res = guard.assess([img(5, 5), img(6, 5)], ids=["x", "y"])
    assert [a.image for a in res] == ["x", "y"]
    with pytest.raises(ConfigError):
        guard.assess([img(5, 5)], batch_size=0)
    with pytest.raises(ConfigError, match="fewer ids"):
        guard.assess([img(5, 5), img(5, 5)], ids=["only-one"])


def test_bytes_input(guard, tmp_path):
    p = tmp_path / "x.png"
    img(9, 4).save(p)
    a = guard.assess(p.read_bytes())
    assert a.image == "bytes-0" and a.rating == "Unsafe"


def test_filter_keeps_safe_images_and_fails_closed(guard):
    images = [img(20, 10), img(10, 20), img(13, 40), img(10, 30)]
    result = guard.filter(images)
    assert result.keep == [False, True, False, True]  # the 13-px one failed: dropped
    assert result.kept == [images[1], images[3]]
    assert [a.rating for a in result.rejected] == ["Unsafe", None]
    assert guard.filter(images, keep_failed=True).keep == [False, True, True, True]
    assert guard.filter([img(20, 10)], allow="O2").assessments[0].policy_id == (
        Policy.load(allow="O2").id
    )
    with pytest.raises(ConfigError, match="threshold"):
        guard.filter(images, threshold=1.5)
