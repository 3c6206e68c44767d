"""Tiny, randomly initialised models of the real VLM classes, built with no download.

Users test their integrations with these, and so do this project's tests: the folders are
ordinary model folders (config, safetensors, tokenizer, processor, chat template) that stock
``AutoProcessor`` / ``AutoModelForImageTextToText`` load. The tokenizer is trained here on the
policy text and answer vocabulary so prompts tokenize realistically. What the models say is
noise: this module knows nothing about answers, only about building loadable folders.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from llavaguard.errors import ConfigError

FAMILIES: tuple[str, ...] = ("llava-onevision", "llava", "qwen2.5-vl")

# Written without whitespace control so the newlines stay exactly where ChatML puts them.
_CHATML = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}IMAGE{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Qwen2.5-VL's own template adds this system turn when none is given; keep that behaviour.
_QWEN_SYSTEM = (
    "{% if messages[0]['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
)
_VICUNA = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{% for c in message['content'] %}{{ c['text'] }}{% endfor %} "
    "{% elif message['role'] == 'user' %}USER: "
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n{% endif %}"
    "{% endfor %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %} "
    "{% else %}ASSISTANT: "
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}</s>"
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

_TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=8192,
)


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


def _tokenizer(family: str, vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = _SPECIALS[family]
    tok = Tokenizer(models.BPE(unk_token="<unk>" if family == "llava" else None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    if family == "llava":
        names = dict(unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    else:
        names = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>")
    named = set(names.values())
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        padding_side="left",
        extra_special_tokens=[s for s in specials if s not in named],
        **names,
    )


def build_tiny_model(
    out_dir: str | os.PathLike, family: str = "llava-onevision", *, seed: int = 0
) -> Path:
    """Write a tiny random model of ``family`` to ``out_dir`` and return the folder."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown model family {family!r} (valid: {', '.join(FAMILIES)})")
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(family, vocab_size=1024)
    builder = {"llava-onevision": _onevision, "llava": _llava, "qwen2.5-vl": _qwen25vl}[family]
    torch.manual_seed(seed)
    model, processor = builder(tokenizer)
    pad = tokenizer.pad_token_id
    eos = tokenizer.eos_token_id
    model.generation_config.pad_token_id = pad
    model.generation_config.eos_token_id = eos
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    for cfg in (model.config, getattr(model.config, "text_config", None)):
        if cfg is not None:  # keep config ids inside the tiny vocabulary
            cfg.pad_token_id, cfg.eos_token_id = pad, eos
            cfg.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _ids(tokenizer: Any, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


def _onevision(tokenizer: Any) -> tuple[Any, Any]:
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    image, patch = 32, 8
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    image_id, video_id = _ids(tokenizer, "<image>", "<video>")
    config = LlavaOnevisionConfig(
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image,
            patch_size=patch,
            vision_use_head=False,
        ),
        text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), **_TEXT),
        image_token_index=image_id,
        video_token_index=video_id,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
        image_grid_pinpoints=pinpoints,
        tie_word_embeddings=True,
    )
    model = LlavaOnevisionForConditionalGeneration(config)
    size = {"height": image, "width": image}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=pinpoints),
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        tokenizer=tokenizer,
        num_image_tokens=(image // patch) ** 2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        chat_template=_CHATML.replace("IMAGE", "<image>\n"),
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
        num_additional_image_tokens=1,
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
    config = Qwen2_5_VLConfig(
        text_config=dict(
            model_type="qwen2_5_vl_text",
            vocab_size=len(tokenizer),
            rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
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
    pixels = {"shortest_edge": 56 * 56, "longest_edge": 112 * 112}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=pixels, patch_size=14, merge_size=2),
        video_processor=Qwen2VLVideoProcessor(size=pixels, patch_size=14, merge_size=2),
        tokenizer=tokenizer,
        chat_template=_QWEN_SYSTEM
        + _CHATML.replace("IMAGE", "<|vision_start|><|image_pad|><|vision_end|>"),
    )
    return model, processor
