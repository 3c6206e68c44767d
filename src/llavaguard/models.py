"""Known safeguard models, and where a model id or folder resolves to on disk.

The registry holds what cannot be read from a model's config: which released weights are
which family, which need a different runtime, and the conversation defaults they were
trained with. Unknown ids still work: their family comes from ``config.json``.
Resolving never hangs: a cached or local copy is used first, and a failed download
becomes one line that says how to get access or point at a folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from llavaguard.errors import ModelLoadError

DEFAULT_MODEL = "AIML-TUDA/LlavaGuard-v1.2-0.5B-OV-hf"
V12_SYSTEM_PROMPT = "You are a helpful assistant."

# transformers model_type -> our family name
FAMILIES = {
    "llava_onevision": "llava-onevision",
    "llava": "llava",
    "qwen2_5_vl": "qwen2.5-vl",
    "qwen2_vl": "qwen2-vl",
    "qwen3_vl": "qwen3-vl",
    "llava_next": "llava-next",
    "idefics3": "idefics3",
    "gemma3": "gemma3",
    "mllama": "mllama",
}


class ModelSpec(BaseModel):
    """What we know about a released model beyond its config."""

    model_config = ConfigDict(frozen=True)

    id: str
    family: str
    size: str
    system_prompt: str | None = None
    transformers: bool = True  # loadable by transformers (the non -hf OV repos are not)
    note: str = ""


KNOWN_MODELS: dict[str, ModelSpec] = {
    s.id: s
    for s in [
        ModelSpec(
            id="AIML-TUDA/LlavaGuard-v1.2-0.5B-OV-hf",
            family="llava-onevision",
            size="0.5B",
            system_prompt=V12_SYSTEM_PROMPT,
            note="default; Qwen2-0.5B + SigLIP-so400m",
        ),
        ModelSpec(
            id="AIML-TUDA/LlavaGuard-v1.2-7B-OV-hf",
            family="llava-onevision",
            size="7B",
            system_prompt=V12_SYSTEM_PROMPT,
        ),
        ModelSpec(id="AIML-TUDA/LlavaGuard-7B-hf", family="llava", size="7B", note="v1"),
        ModelSpec(id="AIML-TUDA/LlavaGuard-v1.1-7B-hf", family="llava", size="7B"),
        ModelSpec(id="AIML-TUDA/LlavaGuard-v1.1-13B-hf", family="llava", size="13B"),
        ModelSpec(id="AIML-TUDA/QwenGuard-v1.2-3B", family="qwen2.5-vl", size="3B"),
        ModelSpec(id="AIML-TUDA/QwenGuard-v1.2-7B", family="qwen2.5-vl", size="7B"),
        ModelSpec(
            id="AIML-TUDA/LlavaGuard-v1.2-0.5B-OV",
            family="llava-onevision",
            size="0.5B",
            transformers=False,
            note="SGLang format: serve it with SGLang and use the OpenAI-compatible engine",
        ),
        ModelSpec(
            id="AIML-TUDA/LlavaGuard-v1.2-7B-OV",
            family="llava-onevision",
            size="7B",
            transformers=False,
            note="SGLang format: serve it with SGLang and use the OpenAI-compatible engine",
        ),
    ]
}


MODEL_CARD_FILE = "llavaguard.json"  # written by ``llavaguard train`` into the models it makes


def spec_for(model: str) -> ModelSpec | None:
    """A released model's spec, or the one a trained model folder carries (so a model
    fine-tuned from a released one is prompted the way it was trained)."""
    if model in KNOWN_MODELS:
        return KNOWN_MODELS[model]
    card = Path(model).expanduser() / MODEL_CARD_FILE
    if not card.is_file():
        return None
    try:
        data = json.loads(card.read_text("utf-8"))
        return ModelSpec(
            id=model,
            family=data.get("family") or family_from_config(card.parent),
            size=str(data.get("size", "")),
            system_prompt=data.get("system_prompt"),
            note=f"trained from {data.get('base', '?')}",
        )
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{card}: unreadable ({e})") from e


def describe_model(model: str, path: Path | None = None) -> ModelSpec:
    """What is known about any model: a released or trained model's spec, else its family
    read from the config in ``path`` (no system prompt: the chat template's default)."""
    spec = spec_for(model)
    if spec is not None:
        return spec
    family = family_from_config(path) if path is not None else "unknown"
    return ModelSpec(id=model, family=family, size="")


def family_from_config(path: Path) -> str:
    """The family of a model folder, from its config's model_type."""
    try:
        model_type = json.loads((path / "config.json").read_text("utf-8")).get("model_type", "")
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{path}: unreadable config.json ({e})") from e
    return FAMILIES.get(model_type, model_type or "unknown")


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or os.sep in model.strip("/").replace("/", "", 1)


def resolve_model(
    model: str,
    *,
    token: str | bool | None = None,
    revision: str | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """A local folder holding the model: the folder itself, the cache, or a fresh download."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{model}: not a model folder (no config.json)")
        return path
    if path.exists() or _looks_like_path(model):
        raise ModelLoadError(f"{model}: no such model folder")
    spec = spec_for(model)
    if spec is not None and not spec.transformers:
        raise ModelLoadError(f"{model}: cannot be loaded with transformers ({spec.note})")

    from huggingface_hub import constants

    offline = local_files_only if local_files_only is not None else constants.HF_HUB_OFFLINE
    cached = _download(model, revision, token, local_only=True)
    if cached is not None:
        return cached
    if offline:
        raise ModelLoadError(
            f"model {model} is not in the local cache and offline mode is on; download it "
            "first or pass a local folder with --model DIR"
        )
    path = _download(model, revision, token, local_only=False)
    assert path is not None  # a failed download raises
    return path


_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken", "*.py"]


def _download(
    model: str, revision: str | None, token: str | bool | None, local_only: bool
) -> Path | None:
    """The snapshot folder: from the cache alone (None when it is not there), or downloaded
    (every failure one line that says what to do)."""
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import snapshot_download

    if local_only:
        try:
            return Path(
                snapshot_download(
                    model,
                    revision=revision,
                    token=token,
                    local_files_only=True,
                    allow_patterns=_PATTERNS,
                )
            )
        except (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled, OSError):
            return None
        except hf_errors.HFValidationError as e:
            raise ModelLoadError(f"{model!r} is neither a model folder nor a hub id ({e})") from e
    hint = _access_hint(model)
    try:
        return Path(
            snapshot_download(
                model, revision=revision, token=token, allow_patterns=_PATTERNS, etag_timeout=10
            )
        )
    except hf_errors.GatedRepoError as e:
        raise ModelLoadError(f"model {model} is gated: {hint}") from e
    except hf_errors.RepositoryNotFoundError as e:
        raise ModelLoadError(f"model {model} not found on the hub (or private: {hint})") from e
    except hf_errors.RevisionNotFoundError as e:
        raise ModelLoadError(f"model {model} has no revision {revision!r}") from e
    except Exception as e:  # network down, proxy, disk full: one line, never a traceback
        reason = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        raise ModelLoadError(
            f"cannot download model {model} ({reason}); check the network, or pass a local "
            "folder with --model DIR"
        ) from e


def _access_hint(model: str) -> str:
    return (
        f"accept its terms at https://huggingface.co/{model}, then log in with `hf auth login` "
        "or set HF_TOKEN (or pass --token)"
    )
