"""The local engine on its own: device, dtype and family choices, and errors."""

import pytest

from llavaguard.engines import engine_class, load_engine
from llavaguard.engines.transformers import TransformersEngine, pick_device, pick_dtype
from llavaguard.errors import ConfigError, ModelLoadError


def test_registry():
    assert engine_class("transformers") is TransformersEngine
    with pytest.raises(ConfigError, match="valid: transformers"):
        engine_class("nope")


def test_auto_choices_on_this_machine():
    import torch

    device = pick_device()
    assert device in ("cuda", "mps", "cpu")
    if device == "cpu":
        assert pick_dtype("cpu") is torch.float32
    assert pick_dtype("cpu", "bf16") is torch.bfloat16
    with pytest.raises(ConfigError, match="unknown dtype 'int3'"):
        pick_dtype("cpu", "int3")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            pick_device("cuda:0")


def test_family_from_config_and_empty_batch(tmp_path):
    from llavaguard.testing import build_tiny_model

    path = build_tiny_model(tmp_path / "m", "llava")
    engine = load_engine("transformers", str(path))
    assert engine.family == "llava" and engine.name == "transformers"
    assert engine.generate([]) == []


def test_broken_model_folder(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llava"}')
    with pytest.raises(ModelLoadError, match="cannot load") as info:
        TransformersEngine(str(tmp_path))
    assert "\n" not in str(info.value)
