"""The tiny offline models: stock transformers loads them, they batch, and seeds repeat.

Everything is loaded only through ``AutoProcessor`` / ``AutoModelForImageTextToText``, the way
an inference engine loads released weights, so these tests pin the facts the engine relies on.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import pytest

from llavaguard.errors import ConfigError
from llavaguard.testing import FAMILIES, build_tiny_model, make_sample_images

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

# What each family's template puts before the text, and the token that ends a turn.
EXPECTED = {
    "llava-onevision": ("<|im_start|>user\n<image>\n", "<|im_end|>", "<image>"),
    "llava": ("USER: <image>\n", "</s>", "<image>"),
    "qwen2.5-vl": (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>",
        "<|im_end|>",
        "<|image_pad|>",
    ),
}


# The key names of the released hub checkpoints (llava-hf/llava-1.5-7b-hf,
# llava-hf/llava-onevision-qwen2-0.5b-ov-hf and LlavaGuard-v1.2-0.5B-OV-hf, Qwen/Qwen2.5-VL-*),
# which vLLM's model classes load: every saved key starts with one of these prefixes, and the
# listed keys are present. transformers 5 names the same weights differently inside the model.
_LLAVA_PREFIXES = (
    "language_model.model.",
    "language_model.lm_head.",
    "multi_modal_projector.",
    "vision_tower.vision_model.",
)
HUB_LAYOUT = {
    "llava": (
        _LLAVA_PREFIXES,
        {
            "vision_tower.vision_model.embeddings.class_embedding",
            "vision_tower.vision_model.embeddings.patch_embedding.weight",
            "vision_tower.vision_model.pre_layrnorm.weight",
            "vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight",
            "multi_modal_projector.linear_1.weight",
            "language_model.model.embed_tokens.weight",
            "language_model.model.layers.0.self_attn.q_proj.weight",
            "language_model.lm_head.weight",
        },
    ),
    "llava-onevision": (
        (*_LLAVA_PREFIXES, "image_newline"),
        {
            "image_newline",
            "vision_tower.vision_model.embeddings.patch_embedding.weight",
            "vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight",
            "vision_tower.vision_model.post_layernorm.weight",
            "multi_modal_projector.linear_1.weight",
            "language_model.model.embed_tokens.weight",
            "language_model.model.layers.0.self_attn.q_proj.weight",
        },
    ),
    "qwen2.5-vl": (
        ("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.", "visual."),
        {
            "visual.patch_embed.proj.weight",
            "visual.blocks.0.attn.qkv.weight",
            "visual.merger.mlp.0.weight",
            "model.embed_tokens.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.norm.weight",
        },
    ),
}


def _policy_text(n_chars: int) -> str:
    """A few hundred characters of real policy text, taken from the packaged taxonomy."""
    raw = resources.files("llavaguard.policy").joinpath("llavaguard-v1.2.json").read_text("utf-8")
    tax = json.loads(raw)
    first = tax["categories"][0]
    return (tax["preamble"] + first["header"] + ": \n" + first["default"])[:n_chars]


# the default model's family in the fast tier, the other two with the slow tests
@pytest.fixture(
    scope="module",
    params=[pytest.param(f, marks=() if f == "llava-onevision" else pytest.mark.slow)
            for f in FAMILIES],
)  # fmt: skip
def built(request, tiny_models) -> tuple[str, Path]:
    family = request.param
    return family, tiny_models(family)  # seed 0, shared with the other tests


def test_stock_transformers_loads_and_batches(built, capfd):
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    family, path = built
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path)
    tokenizer = processor.tokenizer
    prefix, end_of_turn, image_token = EXPECTED[family]
    assert tokenizer.padding_side == "left"
    assert [len(tokenizer.tokenize(w)) for w in ("Safe", "Unsafe")] == [1, 1]
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids(end_of_turn)
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id is not None
    assert sum(p.numel() for p in model.parameters()) < 1_000_000

    texts = []
    for n_chars in (300, 420):  # two lengths, so the batch is padded for every family
        conv = [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": _policy_text(n_chars)}],
            }
        ]
        texts.append(processor.apply_chat_template(conv, add_generation_prompt=True))
    assert all(t.startswith(prefix) for t in texts)
    images = [Image.new("RGB", (64, 40), "red"), Image.new("RGB", (300, 500), "blue")]
    inputs = processor(images=images, text=texts, padding=True, return_tensors="pt")
    nested = processor(
        images=[[im] for im in images], text=texts, padding=True, return_tensors="pt"
    )
    assert torch.equal(inputs["input_ids"], nested["input_ids"])

    mask = inputs["attention_mask"]
    assert mask[:, -1].all() and not mask[:, 0].all()  # left padding
    image_id = tokenizer.convert_tokens_to_ids(image_token)
    assert ((inputs["input_ids"] == image_id).sum(dim=1) > 0).all()

    capfd.readouterr()
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    prompt_len = inputs["input_ids"].shape[1]
    assert out.shape[0] == 2 and prompt_len < out.shape[1] <= prompt_len + 8
    assert torch.equal(out[:, :prompt_len], inputs["input_ids"])
    assert "pad_token_id" not in capfd.readouterr().err


def test_same_seed_same_weights(built, tmp_path):
    import torch
    from safetensors.torch import load_file

    family, path = built
    torch.manual_seed(7)
    expected_next = torch.rand(3)
    torch.manual_seed(7)
    same = load_file(build_tiny_model(tmp_path / "b", family, seed=0) / "model.safetensors")
    assert torch.equal(torch.rand(3), expected_next)  # the caller's RNG is left alone
    other = load_file(build_tiny_model(tmp_path / "c", family, seed=4) / "model.safetensors")
    first = load_file(path / "model.safetensors")
    assert first.keys() == same.keys()
    assert all(torch.equal(first[k], same[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)
    assert (tmp_path / "b" / "tokenizer.json").read_bytes() == (
        path / "tokenizer.json"
    ).read_bytes()


def test_unknown_family():
    with pytest.raises(ConfigError, match=r"valid: llava-onevision, llava, qwen2\.5-vl") as info:
        build_tiny_model("/nonexistent", "gpt-2")
    assert "\n" not in str(info.value)
    assert not Path("/nonexistent").exists()


def test_sample_images(tmp_path):
    from PIL import Image

    paths = make_sample_images(tmp_path, 8, seed=1)
    assert len({p.suffix for p in paths}) >= 6
    modes, sizes = set(), set()
    for p in paths:
        with Image.open(p) as im:
            modes.add(im.mode)
            sizes.add(im.size)
    assert {"RGB", "RGBA", "P"} <= modes
    assert len(sizes) == len(paths) and all(min(s) >= 64 and max(s) <= 640 for s in sizes)
    again = make_sample_images(tmp_path / "again", 8, seed=1)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]


def test_real_size_only_for_onevision():
    with pytest.raises(ConfigError, match=r"0\.5b for llava-onevision"):
        build_tiny_model("/nonexistent", "llava", size="0.5b")


def _saved(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


def _check_hub_layout(family: str, path: Path, scratch: Path) -> None:
    """Saved names are the hub's; stock ``from_pretrained`` (a user's hub download) finds every
    weight, and a save of what it loaded writes the same tensors under the same names."""
    import torch
    from transformers import AutoModelForImageTextToText

    prefixes, required = HUB_LAYOUT[family]
    saved = _saved(path)
    assert [k for k in saved if not k.startswith(prefixes)] == []
    assert required - saved.keys() == set()

    model, info = AutoModelForImageTextToText.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    model.save_pretrained(scratch)
    again = _saved(scratch)
    assert again.keys() == saved.keys()
    assert all(torch.equal(again[k], saved[k]) for k in saved)  # loaded, not re-initialised
    # vLLM's CPU attention supports heads 32 and 64 wide (it refused 16); its vision towers
    # run with PyTorch's SDPA, which takes any width
    text = model.config.get_text_config()
    assert text.hidden_size // text.num_attention_heads == 32


def test_hub_layout_and_vllm_head_size(built, tmp_path):
    family, path = built
    _check_hub_layout(family, path, tmp_path / "resaved")


def test_small_size_hub_layout(tmp_path):
    path = build_tiny_model(tmp_path / "small", "llava-onevision", size="small")
    _check_hub_layout("llava-onevision", path, tmp_path / "resaved")
