"""The local engine on its own: device, dtype and family choices, and errors."""

import pytest

from llavaguard.engines import engine_class
from llavaguard.engines.transformers import (
    TransformersEngine,
    TransformersOptions,
    pick_device,
    pick_dtype,
)
from llavaguard.errors import ConfigError, ModelLoadError


def test_registry():
    assert engine_class("transformers") is TransformersEngine
    assert engine_class("openai").name == "openai"
    with pytest.raises(ConfigError, match="valid: openai, transformers"):
        engine_class("nope")


def test_auto_choices_on_this_machine():
    import torch

    device = pick_device()
    assert device in ("cuda", "mps", "cpu")
    from llavaguard.engines.transformers import cpu_has_bf16

    expected = torch.bfloat16 if cpu_has_bf16() else torch.float32
    assert pick_dtype("cpu") is expected
    assert pick_dtype("cpu", "bf16") is torch.bfloat16
    with pytest.raises(ConfigError, match="unknown dtype 'int3'"):
        pick_dtype("cpu", "int3")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            pick_device("cuda:0")


def test_family_from_config_and_empty_batch(tiny_models):
    path = tiny_models("llava")
    engine = TransformersEngine.load(str(path))
    assert engine.family == "llava" and engine.name == "transformers"
    assert engine.generate([]) == []


@pytest.mark.slow  # two bfloat16 engines generating
def test_float32_decode_attention_keeps_answers(tmp_path, tiny_models):
    """bfloat16 on a CPU decodes with float32 attention; the answer is unchanged."""
    from llavaguard import Guard
    from llavaguard.engines import GenerationConfig
    from llavaguard.engines.transformers import use_float32_decode_attention
    from llavaguard.testing import make_sample_images

    path = tiny_models("qwen2.5-vl")
    images = make_sample_images(tmp_path / "img", 3)
    config = GenerationConfig(max_new_tokens=20)
    plain = TransformersEngine.load(str(path), TransformersOptions(dtype="bfloat16"))
    plain.model.set_attn_implementation("sdpa")
    # applied when loaded
    mixed = TransformersEngine.load(str(path), TransformersOptions(dtype="bfloat16"))
    assert use_float32_decode_attention(mixed.model)
    assert mixed.model.config.get_text_config()._attn_implementation == "llavaguard_sdpa"
    a = Guard(plain, generation=config).assess(images)
    b = Guard(mixed, generation=config).assess(images)
    assert [x.rating for x in a] == [x.rating for x in b]
    assert all(x.valid for x in b)


def test_broken_model_folder(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llava"}')
    with pytest.raises(ModelLoadError, match="cannot load") as info:
        TransformersEngine.load(str(tmp_path))
    assert "\n" not in str(info.value)
