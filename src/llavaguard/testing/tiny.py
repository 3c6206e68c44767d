"""Tiny, randomly initialised models of the real VLM classes, built with no download.

Users test their integrations with these, and so do this project's tests: each folder is an
ordinary model folder (config, safetensors, generation config, tokenizer, processor, chat
template) that stock ``AutoProcessor`` / ``AutoModelForImageTextToText`` load offline. The
tokenizer is trained here on the policy text and the answer vocabulary, so prompts tokenize
realistically and ``Safe`` / ``Unsafe`` are single tokens.

What this module deliberately does not know: what the models say (random weights, so their
answers are noise), how prompts or answers are built or parsed (that is ``llavaguard.policy``),
and which hub model a family stands for (that is ``llavaguard.models``).
"""

from __future__ import annotations

import functools
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from llavaguard.errors import ConfigError

FAMILIES: tuple[str, ...] = ("llava-onevision", "llava", "qwen2.5-vl")

_VOCAB_SIZE = 1024


def _chatml(image: str, video: str, *, default_system: bool) -> str:
    """A ChatML template; written without whitespace control so every newline is visible."""
    system = (
        "{% if messages[0]['role'] != 'system' %}"
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    )
    body = (
        "{% for message in messages %}"
        "<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for c in message['content'] %}"
        f"{{% if c['type'] == 'image' %}}{image}"
        f"{{% elif c['type'] == 'video' %}}{video}"
        "{% elif c['type'] == 'text' %}"
        "{% if message['role'] == 'assistant' %}{% generation %}{{ c['text'] }}{% endgeneration %}"
        "{% else %}{{ c['text'] }}{% endif %}"
        "{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return (system if default_system else "") + body


# LLaVA-1.5 (vicuna v1): "USER: <image>\n{text} ASSISTANT: {answer}</s>", images before text.
_VICUNA = (
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set parts = [{'type': 'text', 'text': "
    "message['content']}] %}{% else %}{% set parts = message['content'] %}{% endif %}"
    "{% if message['role'] == 'system' %}"
    "{% for c in parts %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %} "
    "{% elif message['role'] == 'user' %}USER: "
    "{% for c in parts %}{% if c['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for c in parts %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %} "
    "{% else %}ASSISTANT: {% generation %}"
    "{% for c in parts %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "</s>{% endgeneration %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

_SPECIALS = {
    "llava-onevision": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"],
    "qwen2.5-vl": [
        "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
        "<|image_pad|>", "<|video_pad|>",
    ],
    "llava": ["<unk>", "<s>", "</s>", "<pad>", "<image>"],
}  # fmt: skip

# The language models' attention heads are 32 wide: vLLM's CPU attention supports head sizes
# of 32 and 64 (it refused 16), and 32 keeps the models small. One KV head for two query heads
# keeps the grouped-query attention of the real Qwen2 models. Vision towers keep two 16-wide
# heads: vLLM runs them with PyTorch's SDPA, which takes any head size.
_TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=8192,
)


# "small": still seconds per step on a CPU, with room to learn a task (the synthetic benchmark)
_SMALL = dict(
    _TEXT, hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2,
)  # fmt: skip


def _corpus() -> list[str]:
    """Policy texts and answers, so words like Safe and Unsafe become single tokens."""
    raw = resources.files("llavaguard.policy").joinpath("llavaguard-v1.2.json").read_text("utf-8")
    tax = json.loads(raw)
    labels = [c["header"] for c in tax["categories"]] + [tax["none_category"]]
    texts = [tax["preamble"]]
    for c in tax["categories"]:
        texts += [c["header"], c["default"], c["non_violating"], c["sensitive"]]
    for i, label in enumerate(labels):
        for rating in ("Safe", "Unsafe"):
            answer = {
                "rating": rating,
                "category": label,
                "rationale": f"The image shows content that is {rating.lower()} under {label}.",
            }
            texts += [json.dumps(answer, indent=4), json.dumps(answer)] * (2 + i % 2)
    texts += ["USER: ASSISTANT: system user assistant You are a helpful assistant."] * 4
    return texts


def _tokenizer(family: str) -> Any:
    """Train a byte-level BPE (well under a second) and wrap it with the family's specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = _SPECIALS[family]
    tok = Tokenizer(models.BPE(unk_token="<unk>" if family == "llava" else None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    if family == "llava":
        # Llama tokenizers put <s> in front of every text; the llava-hf template relies on it.
        names: dict[str, Any] = dict(
            unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
        )
        names["add_bos_token"] = True
    else:  # Qwen2 tokenizers add no BOS; <|endoftext|> pads, <|im_end|> ends a turn.
        names = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>")
    named = set(names.values())
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        padding_side="left",  # set here: set after construction, it is not saved
        extra_special_tokens=[s for s in specials if s not in named],
        **names,
    )


SIZES: tuple[str, ...] = ("tiny", "small", "0.5b")


def build_tiny_model(
    out_dir: str | os.PathLike,
    family: str = "llava-onevision",
    *,
    seed: int = 0,
    size: str = "tiny",
) -> Path:
    """Write a random model of ``family`` to ``out_dir`` and return the folder.

    The same seed gives the same weights; the caller's global torch RNG is left untouched.
    ``size="small"`` (llava-onevision only) has a 4-layer, 128-wide language model: still
    fast on a CPU, with room to learn the synthetic benchmark. ``size="0.5b"``
    (llava-onevision only) builds the real LlavaGuard-v1.2-0.5B-OV architecture (Qwen2-0.5B
    text, SigLIP-so400m vision, 384-px anyres tiles, the full 151,936-token vocabulary) with
    random weights, saved in bfloat16: for timing, not answers.
    """
    if family not in FAMILIES:
        raise ConfigError(f"unknown model family {family!r} (valid: {', '.join(FAMILIES)})")
    if size not in SIZES or (size != "tiny" and family != "llava-onevision"):
        raise ConfigError(
            f"size {size!r} is not available for {family} "
            "(tiny; small and 0.5b for llava-onevision)"
        )
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(family)
    builder = {"llava-onevision": _onevision, "llava": _llava, "qwen2.5-vl": _qwen25vl}[family]
    if size == "0.5b":
        builder = _onevision_05b
    elif size == "small":
        builder = functools.partial(_onevision, small=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, processor = builder(tokenizer)
    if size == "0.5b":
        model = model.to(torch.bfloat16)
    ids = dict(
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    for cfg in (model.generation_config, model.config, model.config.get_text_config()):
        for key, value in ids.items():  # keep every id inside the tiny vocabulary
            setattr(cfg, key, value)
    _as_loaded_from_hub(model)
    _quietly(model.save_pretrained, out)
    processor.save_pretrained(out)
    return out


def _as_loaded_from_hub(model: Any) -> None:
    """Make ``save_pretrained`` write the released hub checkpoints' key names.

    transformers 5 renames hub keys on load (its checkpoint conversion mapping) and reverts
    the renamings a loaded model used when it saves. A model built from scratch has no record
    of what was used, so transformers drops the prefix changes from the reverse mapping: the
    LLaVA / LLaVA-OneVision vision tower would be saved as ``vision_tower.embeddings...``
    instead of the hub's ``vision_tower.vision_model.embeddings...``, which vLLM refuses.
    Recording the model's whole mapping as used (transformers' own ``_weight_conversions``,
    which ``from_pretrained`` sets for a hub download) makes the save revert all of it, with
    no renaming here. tests/test_testing_models.py checks the saved names and a clean reload.
    """
    from transformers.conversion_mapping import get_model_conversion_mapping

    model._weight_conversions = get_model_conversion_mapping(model, add_legacy=False)


def _quietly(save: Any, out: Path) -> None:
    """Save without transformers' progress bar, then restore the caller's setting."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        save(out)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _ids(tokenizer: Any, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


def _onevision(tokenizer: Any, *, small: bool = False) -> tuple[Any, Any]:
    # The grid lives in both the processor and the model config; they must agree, or the
    # image-token count and the image-feature count differ.
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    vision = dict(hidden_size=64 if small else 32, intermediate_size=128 if small else 64,
                  num_hidden_layers=2, num_attention_heads=2)  # fmt: skip
    text = dict(vocab_size=len(tokenizer), **(_SMALL if small else _TEXT))
    return _onevision_of(tokenizer, tile=32, patch=8, pinpoints=pinpoints, vision=vision,
                         text=text)  # fmt: skip


def _onevision_05b(tokenizer: Any) -> tuple[Any, Any]:
    """llava-onevision-qwen2-0.5b (the LlavaGuard-v1.2-0.5B-OV architecture) at full size."""
    tile = 384
    pinpoints = [[tile * h, tile * w] for h in range(1, 7) for w in range(1, 7)]
    vision = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=26,
                  num_attention_heads=16)  # fmt: skip
    text = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                rope_theta=1000000.0, tie_word_embeddings=True)  # fmt: skip
    return _onevision_of(tokenizer, tile=tile, patch=14, pinpoints=pinpoints, vision=vision,
                         text=text)  # fmt: skip


def _onevision_of(
    tokenizer: Any,
    *,
    tile: int,
    patch: int,
    pinpoints: list[list[int]],
    vision: dict[str, Any],
    text: dict[str, Any],
) -> tuple[Any, Any]:
    """A LLaVA-OneVision model (SigLIP tower, Qwen2 text, anyres_max_9) and its processor,
    laid out as the released -OV-hf checkpoints are."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    image_id, video_id = _ids(tokenizer, "<image>", "<video>")
    config = LlavaOnevisionConfig(
        vision_config=dict(
            model_type="siglip_vision_model",
            image_size=tile,
            patch_size=patch,
            vision_use_head=False,
            **vision,
        ),
        text_config=dict(model_type="qwen2", **text),
        image_token_index=image_id,
        video_token_index=video_id,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
        image_grid_pinpoints=pinpoints,
        tie_word_embeddings=True,
    )
    model = LlavaOnevisionForConditionalGeneration(config)
    size = {"height": tile, "width": tile}
    norm = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])  # SigLIP's
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(
            size=size, image_grid_pinpoints=pinpoints, **norm
        ),
        video_processor=LlavaOnevisionVideoProcessor(size=size, **norm),
        tokenizer=tokenizer,
        num_image_tokens=(tile // patch) ** 2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        chat_template=_chatml("<image>\n", "<video>\n", default_system=False),
    )
    return model, processor


def _llava(tokenizer: Any) -> tuple[Any, Any]:
    from transformers import (
        CLIPImageProcessor,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    image, patch = 32, 8
    (image_id,) = _ids(tokenizer, "<image>")
    config = LlavaConfig(
        vision_config=dict(
            model_type="clip_vision_model",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image,
            patch_size=patch,
            projection_dim=32,
        ),
        text_config=dict(model_type="llama", vocab_size=len(tokenizer), **_TEXT),
        image_token_index=image_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    model = LlavaForConditionalGeneration(config)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": image}, crop_size={"height": image, "width": image}
        ),
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLS token, dropped by the "default" strategy
        chat_template=_VICUNA,
    )
    return model, processor


def _qwen25vl(tokenizer: Any) -> tuple[Any, Any]:
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    image_id, video_id, start_id, end_id = _ids(
        tokenizer, "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"
    )
    head_dim = _TEXT["hidden_size"] // _TEXT["num_attention_heads"]
    section = [4, 6, 6]  # temporal, height, width; must sum to half the head size
    assert sum(section) * 2 == head_dim
    config = Qwen2_5_VLConfig(
        text_config=dict(
            model_type="qwen2_5_vl_text",
            vocab_size=len(tokenizer),
            rope_parameters={"rope_type": "default", "mrope_section": section, "rope_theta": 1e6},
            # the defaults are the real vocabulary's ids, which this one does not have
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **_TEXT,
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=_TEXT["hidden_size"],
            fullatt_block_indexes=[1],
            window_size=56,
        ),
        image_token_id=image_id,
        video_token_id=video_id,
        vision_start_token_id=start_id,
        vision_end_token_id=end_id,
        tie_word_embeddings=True,
    )
    model = Qwen2_5_VLForConditionalGeneration(config)
    pixels = {"shortest_edge": 56 * 56, "longest_edge": 112 * 112}  # 4 to 16 tokens an image
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=pixels, patch_size=14, merge_size=2),
        video_processor=Qwen2VLVideoProcessor(size=pixels, patch_size=14, merge_size=2),
        tokenizer=tokenizer,
        chat_template=_chatml(
            "<|vision_start|><|image_pad|><|vision_end|>",
            "<|vision_start|><|video_pad|><|vision_end|>",
            default_system=True,  # Qwen2.5-VL's own template adds this system turn
        ),
    )
    return model, processor
