"""The tiny offline models: stock transformers loads them, they batch, and seeds repeat."""

import pytest
from PIL import Image

from llavaguard.errors import ConfigError
from llavaguard.testing import FAMILIES, build_tiny_model, make_sample_images


@pytest.mark.parametrize("family", FAMILIES)
def test_stock_transformers_loads_and_batches(family, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = build_tiny_model(tmp_path / "a", family, seed=3)
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path)
    tokenizer = processor.tokenizer
    assert tokenizer.padding_side == "left"
    assert len(tokenizer.tokenize("Unsafe")) == 1 and len(tokenizer.tokenize("Safe")) == 1
    assert sum(p.numel() for p in model.parameters()) < 1_000_000

    conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x" * 300}]}]
    text = processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
    images = [[Image.new("RGB", (64, 40), "red")], [Image.new("RGB", (300, 500), "blue")]]
    inputs = processor(images=images, text=[text, text], padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    prompt_len = inputs["input_ids"].shape[1]
    assert out.shape[0] == 2 and prompt_len < out.shape[1] <= prompt_len + 8

    same = load_file(build_tiny_model(tmp_path / "b", family, seed=3) / "model.safetensors")
    other = load_file(build_tiny_model(tmp_path / "c", family, seed=4) / "model.safetensors")
    first = load_file(path / "model.safetensors")
    assert all(torch.equal(first[k], same[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_unknown_family():
    with pytest.raises(ConfigError, match=r"valid: llava-onevision, llava, qwen2\.5-vl"):
        build_tiny_model("/nonexistent", "gpt-2")


def test_sample_images(tmp_path):
    paths = make_sample_images(tmp_path, 8, seed=1)
    assert len({p.suffix for p in paths}) >= 5
    again = make_sample_images(tmp_path / "again", 8, seed=1)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
