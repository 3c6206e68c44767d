"""The formats a built training set is written in, as a registry (``FORMATS``): name ->
writer(output folder, {"train": samples, "test": samples}). Row converters are pure and
live in ``dataset.rows``; the labels are written by ``inputs.labels``, the
one writer the evaluation's reader reads back; the Hugging Face folder, which embeds the
images, lives in ``dataset.hf``. Nothing here augments, splits or counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from llavaguard.dataset.rows import to_llava, to_sharegpt, to_trl
from llavaguard.registry import Registry

if TYPE_CHECKING:
    from llavaguard.inputs.labels import LabelledSample


def sharegpt_info(prefix: str = "llavaguard") -> dict:
    """``dataset_info.json`` entries that tell LLaMA-Factory how to read the sharegpt files."""
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user",
            "assistant_tag": "assistant"}  # fmt: skip
    return {
        f"{prefix}_{name}": {
            "file_name": f"{name}.sharegpt.json",
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": tags,
        }
        for name in ("train", "test")
    }


Parts = dict[str, list["LabelledSample"]]  # split name -> samples


def _write_json(out: Path, parts: Parts, fmt: str, convert: Callable[..., list[dict]]) -> None:
    for name, part in parts.items():
        (out / f"{name}.{fmt}.json").write_text(json.dumps(convert(part), indent=1) + "\n")


def _write_jsonl(out: Path, parts: Parts, fmt: str, convert: Callable[..., list[dict]]) -> None:
    for name, part in parts.items():
        with (out / f"{name}.{fmt}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in convert(part))


def _write_sharegpt(out: Path, parts: Parts) -> None:
    _write_json(out, parts, "sharegpt", to_sharegpt)
    info_path = out / "dataset_info.json"  # merged, so a LLaMA-Factory data folder keeps its own
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info_path.write_text(json.dumps({**info, **sharegpt_info()}, indent=2) + "\n")


def _write_labels(out: Path, parts: Parts) -> None:
    from llavaguard.inputs.labels import write_labels

    for name, part in parts.items():
        write_labels(part, out / f"{name}.labels.jsonl")


def _write_hf(out: Path, parts: Parts) -> None:
    from llavaguard import __version__
    from llavaguard.dataset.hf import write_hf

    write_hf(parts, out / "hf", f"LlavaGuard training set built by llavaguard {__version__}")


# name -> writer(output folder, {"train": samples, "test": samples}); hf first: it is the one
# that reads every image, so a missing or broken image stops the build before the rest.
FORMATS: Registry[Callable[[Path, Parts], None]] = Registry(
    "format",
    {
        "hf": _write_hf,
        "llava": lambda out, parts: _write_json(out, parts, "llava", to_llava),
        "trl": lambda out, parts: _write_jsonl(out, parts, "trl", to_trl),
        "sharegpt": _write_sharegpt,
        "labels": _write_labels,
    },
)


def check_formats(formats: Sequence[str]) -> list[str]:
    """The formats to write, in FORMATS order; ``labels`` always (the evaluation reads it)."""
    FORMATS.get_many(list(formats))  # an unknown name stops here, before any work
    return [f for f in FORMATS if f in formats or f == "labels"]
