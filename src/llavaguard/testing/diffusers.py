"""A tiny, randomly initialised Stable Diffusion pipeline, built with no download.

The real diffusers and transformers classes (UNet2DConditionModel, AutoencoderKL,
CLIPTextModel, a CLIPTokenizer made here from a byte-level vocab.json and merges.txt, a DDIM
scheduler, a CLIPImageProcessor and diffusers' own StableDiffusionSafetyChecker) saved as an
ordinary pipeline folder, laid out as the Stable Diffusion repos on the hub are, so
``StableDiffusionPipeline.from_pretrained(folder, safety_checker=...)`` goes the way it goes
for a user's real one. Its images are noise; 32x32 pixels take a fraction of a second.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_WIDTH = 32  # the text encoder's width, which the UNet cross-attends to


def _clip_tokenizer(folder: Path) -> Any:
    """A CLIP tokenizer from files written here: every byte's symbol alone and at a word's
    end (so any text tokenizes), CLIP's two special tokens, and a few merges."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in [*symbols, *(s + "</w>" for s in symbols)]:
        vocab.setdefault(token, len(vocab))
    merges = ["a t</w>", "c at</w>", "o g</w>", "d og</w>"]
    for merge in merges:
        vocab.setdefault(merge.replace(" ", ""), len(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), "utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", "utf-8")
    return CLIPTokenizer.from_pretrained(folder, model_max_length=77)


def _safety_checker() -> Any:
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    tiny = {"hidden_size": 8, "intermediate_size": 16, "num_attention_heads": 2,
            "num_hidden_layers": 1}  # fmt: skip
    config = CLIPConfig(text_config=tiny, vision_config={**tiny, "image_size": 16,
                        "patch_size": 8}, projection_dim=8)  # fmt: skip
    return StableDiffusionSafetyChecker(config)


def build_tiny_stable_diffusion(
    out: str | Path, *, seed: int = 0, safety_checker: bool = True
) -> Path:
    """Write the pipeline to ``out`` and return it. With ``safety_checker=False`` the folder
    has neither a safety checker nor a feature extractor, as many fine-tuned repos ship."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPTextConfig, CLIPTextModel

    out = Path(out)
    torch.manual_seed(seed)
    tokenizer = _clip_tokenizer(out / "tokenizer")  # where the hub repos keep those files
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=_WIDTH, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=_WIDTH,
        norm_num_groups=2,
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=2,
    )  # fmt: skip
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=_WIDTH, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))  # fmt: skip
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )  # fmt: skip
    # the crops the tiny CLIP checker takes
    crops = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=_safety_checker() if safety_checker else None,
        feature_extractor=crops if safety_checker else None,
        requires_safety_checker=safety_checker,
    )  # fmt: skip
    pipe.save_pretrained(out)
    return out
