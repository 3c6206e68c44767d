"""Offline testing helpers: tiny real models and sample images, no download needed."""

from llavaguard.testing.diffusers import build_tiny_stable_diffusion
from llavaguard.testing.samples import make_sample_images, write_shards
from llavaguard.testing.tiny import FAMILIES, build_tiny_model

__all__ = [
    "FAMILIES",
    "build_tiny_model",
    "build_tiny_stable_diffusion",
    "make_sample_images",
    "write_shards",
]
