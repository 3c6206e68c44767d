"""A LlavaGuard safety checker for diffusers pipelines, and the same check after any pipeline.

Text-to-image pipelines of the Stable Diffusion kind have a ``safety_checker`` slot: after
the VAE decodes, ``run_safety_checker`` calls ``safety_checker(images=..., clip_input=...)``
and expects ``(images, has_nsfw_concept)`` back. ``LlavaGuardSafetyChecker`` fills that slot
with a ``Guard``, so the images are judged under a written policy (allowed and sensitive
categories, a P(Unsafe) threshold) instead of CLIP's fixed concept list. Pipelines without
the slot (SDXL, Flux, ...) call ``moderate`` on their output; both go through ``_moderate``,
one code path.

What the policy forbids is blacked out (or blurred, ``action="blur"``); an image that could
not be judged is blacked out whatever the action (a safeguard fails closed), and its
assessment says why. diffusers, torch and PIL are imported only when an image arrives.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llavaguard.errors import ConfigError

if TYPE_CHECKING:
    from PIL.Image import Image

    from llavaguard.guard import Assessment, Guard
    from llavaguard.guard.core import FilterResult
    from llavaguard.policy import Policy

log = logging.getLogger(__name__)

Action = Literal["black", "blur"]
ACTIONS: tuple[str, ...] = ("black", "blur")
# the default blur: a Gaussian of this fraction of the image's longer side, enough that
# nothing in a 512-px image is recognisable (sigma about 51 px)
BLUR_FRACTION = 0.1


@dataclass(frozen=True)
class Moderation:
    """How to judge and what to do with what the policy forbids; checked once, when made."""

    policy: Policy
    action: Action = "black"
    threshold: float | None = None
    blur_radius: float | None = None
    batch_size: int | None = None

    @classmethod
    def make(
        cls,
        guard: Guard,
        *,
        action: str = "black",
        threshold: float | None = None,
        policy: Policy | str | Path | None = None,
        allow: str | Iterable[str] | None = None,
        sensitive: str | Iterable[str] | None = None,
        blur_radius: float | None = None,
        batch_size: int | None = None,
    ) -> Moderation:
        """Settings checked now, so a wrong one fails when the pipeline is built, not after
        it has spent minutes generating; the policy is resolved once (allow, sensitive)."""
        if action not in ACTIONS:
            raise ConfigError(f"unknown action {action!r} (valid: {', '.join(ACTIONS)})")
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ConfigError(f"threshold must be between 0 and 1, got {threshold}")
        if blur_radius is not None and not blur_radius > 0:
            raise ConfigError(f"blur radius must be positive, got {blur_radius}")
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        resolved = guard.resolve_policy(policy, allow=allow, sensitive=sensitive)
        return cls(resolved, action, threshold, blur_radius, batch_size)  # type: ignore[arg-type]


def moderate(
    images: Any,
    guard: Guard,
    *,
    action: str = "black",
    threshold: float | None = None,
    policy: Policy | str | Path | None = None,
    allow: str | Iterable[str] | None = None,
    sensitive: str | Iterable[str] | None = None,
    blur_radius: float | None = None,
    batch_size: int | None = None,
) -> tuple[Any, list[Assessment]]:
    """Judge a pipeline's output and black out (or blur) what the policy forbids.

    ``images`` is what ``pipe(...).images`` is for any ``output_type``: a list of PIL
    images, a NumPy array (N, H, W, C) or a torch tensor (N, C, H, W), values in [0, 1].
    Returns the images in the same form (a copy; the input is left as it was) and one
    assessment per image, in order. An image is forbidden when judged Unsafe, or, with
    ``threshold``, when P(Unsafe) >= threshold; one that could not be judged is blacked out.
    All images go to the Guard in one call (one engine batch unless ``batch_size``).
    """
    settings = Moderation.make(guard, action=action, threshold=threshold, policy=policy,
                               allow=allow, sensitive=sensitive, blur_radius=blur_radius,
                               batch_size=batch_size)  # fmt: skip
    out, result = _moderate(images, guard, settings, signed=False)
    return out, result.assessments


class LlavaGuardSafetyChecker:
    """A drop-in for a diffusers pipeline's ``safety_checker``, judging with a ``Guard``.

    ``StableDiffusionPipeline.from_pretrained(repo, safety_checker=checker)``, and then
    every call judges all its images in one Guard call, replaces the forbidden ones,
    sets ``nsfw_content_detected`` per image, and keeps the assessments in
    ``last_assessments`` (``generate`` returns them with the output).

    Not a ``torch.nn.Module`` on purpose: ``pipe.to(device, dtype)`` and CPU offloading move
    only modules, and the Guard's model stays where its engine put it, in its own dtype.
    """

    def __init__(
        self,
        guard: Guard,
        *,
        action: str = "black",
        threshold: float | None = None,
        policy: Policy | str | Path | None = None,
        allow: str | Iterable[str] | None = None,
        sensitive: str | Iterable[str] | None = None,
        blur_radius: float | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.guard = guard
        self.settings = Moderation.make(guard, action=action, threshold=threshold,
                                        policy=policy, allow=allow, sensitive=sensitive,
                                        blur_radius=blur_radius, batch_size=batch_size)  # fmt: skip
        self.last_assessments: list[Assessment] = []

    def __call__(self, images: Any, clip_input: Any = None) -> tuple[Any, list[bool]]:
        """What ``run_safety_checker`` calls. ``clip_input`` (the feature extractor's CLIP
        crops) is not read: LlavaGuard judges the images themselves. A tensor arrives as the
        VAE decoded it, in [-1, 1], and a NumPy array in [0, 1] (diffusers' convention for
        each). An image replaced here is returned in [0, 1] and flagged, which tells the
        pipeline not to rescale it, as it does for diffusers' own checker's black images."""
        signed = _kind(images) == "pt"
        out, result = _moderate(images, self.guard, self.settings, signed=signed)
        self.last_assessments = result.assessments
        return out, [not keep for keep in result.keep]

    def generate(self, pipe: Any, *args: Any, **kwargs: Any) -> tuple[Any, list[Assessment]]:
        """``pipe(*args, **kwargs)`` and the assessments of the images it made (none with
        ``output_type="latent"``, which skips the safety checker)."""
        if getattr(pipe, "safety_checker", None) is not self:
            raise ConfigError("this checker is not the pipeline's safety_checker")
        self.last_assessments = []
        output = pipe(*args, **kwargs)
        return output, self.last_assessments

    @property
    def feature_extractor(self) -> Any:
        """A feature extractor for pipelines that have none (the Stable Diffusion repos ship
        one): the pipeline refuses a safety checker without one and runs it before the
        checker. CLIP's defaults, which are what Stable Diffusion ships, so anything else in
        the pipeline that uses it (an IP-Adapter) still gets the input it expects."""
        from transformers import CLIPImageProcessor

        return CLIPImageProcessor()

    def __repr__(self) -> str:  # diffusers names the checker in its loading messages
        s = self.settings
        return (
            f"LlavaGuardSafetyChecker(model={self.guard.engine.model_id!r}, "
            f"policy={s.policy.describe()!r}, action={s.action!r}, threshold={s.threshold})"
        )


# ---- the one code path ---------------------------------------------------------------------
def _moderate(
    images: Any, guard: Guard, settings: Moderation, *, signed: bool
) -> tuple[Any, FilterResult]:
    """Judge ``images`` (tensors in [-1, 1] when ``signed``) and replace what is forbidden."""
    pil = _to_pil(images, signed=signed)
    result = guard.filter(
        pil,
        threshold=settings.threshold,
        policy=settings.policy,
        batch_size=settings.batch_size or max(1, len(pil)),
    )
    out = _copy(images)
    for i, (keep, assessment) in enumerate(zip(result.keep, result.assessments, strict=True)):
        if keep:
            continue
        if assessment.rating is None:
            why = assessment.error or "no rating in the answer"
            log.warning("image %d could not be judged, blacked out: %s", i, why)
            out = _replace(out, i, None)
        elif settings.action == "blur":
            out = _replace(out, i, _blurred(pil[i], settings.blur_radius))
        else:
            out = _replace(out, i, None)
    return out, result


def _blurred(image: Image, radius: float | None) -> Image:
    from PIL import ImageFilter

    r = radius if radius is not None else BLUR_FRACTION * max(image.size)
    return image.filter(ImageFilter.GaussianBlur(r))


# ---- the three forms a pipeline hands images in ----------------------------------------------
def _kind(images: Any) -> str:
    """'pil', 'np' or 'pt'; anything else is one line saying what is taken."""
    import sys

    import numpy as np

    if isinstance(images, list | tuple) and all(hasattr(i, "getpixel") for i in images):
        return "pil"
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return "np"
    if torch is not None and isinstance(images, torch.Tensor) and images.ndim == 4:
        return "pt"
    raise ConfigError(
        "images must be a list of PIL images, a NumPy array (N, H, W, C) or a torch tensor "
        f"(N, C, H, W), as a diffusers pipeline returns them; got {type(images).__name__}"
    )


def _to_pil(images: Any, *, signed: bool) -> list[Image]:
    """The images as the pipeline would hand them to a user (``output_type="pil"``), made
    by diffusers' own conversions so that what is judged is what would be delivered."""
    kind = _kind(images)
    if kind == "pil":
        return list(images)
    try:
        from diffusers.image_processor import VaeImageProcessor
    except ImportError:
        raise ConfigError(
            "arrays and tensors are read the way diffusers reads them, and diffusers is not "
            "installed: pip install 'llavaguard[diffusers]'"
        ) from None
    if kind == "pt":
        tensor = VaeImageProcessor.denormalize(images) if signed else images
        images = VaeImageProcessor.pt_to_numpy(tensor.detach())
    return VaeImageProcessor.numpy_to_pil(images)


def _copy(images: Any) -> Any:
    kind = _kind(images)
    if kind == "pil":
        return list(images)
    return images.clone() if kind == "pt" else images.copy()


def _replace(images: Any, index: int, replacement: Image | None) -> Any:
    """``images`` with image ``index`` black (``None``: exactly zero) or ``replacement``,
    in [0, 1] whatever range the others are in (see ``LlavaGuardSafetyChecker.__call__``)."""
    kind = _kind(images)
    if kind == "pil":
        from PIL import Image as PILImage

        original = images[index]
        images[index] = (
            replacement
            if replacement is not None
            else PILImage.new(original.mode, original.size, "black")
        )
        return images
    if replacement is None:
        images[index] = 0
        return images
    import numpy as np

    pixels = np.asarray(replacement, dtype=np.float32) / 255.0
    if kind == "np":
        images[index] = pixels.reshape(images[index].shape)
        return images
    import torch

    channels_last = torch.from_numpy(pixels).reshape(images[index].permute(1, 2, 0).shape)
    images[index] = channels_last.permute(2, 0, 1).to(images)
    return images
