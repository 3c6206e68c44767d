"""The training set as a Hugging Face ``datasets`` folder (``save_to_disk``) with the images
inside, so it can be moved, shared or pushed without the source images.

Rows are TRL's conversational prompt/completion (as ``to_trl`` builds them) beside the labels
the evaluation needs. Arrow stores every content entry with both ``type`` and ``text``, so an
image entry reads back as ``{"type": "image", "text": None}``: that is the form TRL's own
vision datasets have, and chat templates select entries by ``type``.

Image bytes: a file is embedded as it is when ``datasets`` decodes it to the pixels
``load_image`` gives the Guard (a one-frame RGB JPEG, PNG or WebP without an EXIF rotation);
anything else (transparency, palettes, CMYK, animations, rotations, rarer formats) is stored
as the PNG of ``load_image``'s pixels. So training sees what the Guard sees at inference.
Rows are written in batches to an Arrow file first, so memory does not grow with the set.

It deliberately knows nothing about augmentations or splits: samples in, folder out.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llavaguard.errors import ConfigError, ImageError

if TYPE_CHECKING:
    from llavaguard.inputs.labels import LabelledSample

_AS_IS = {"JPEG", "PNG", "WEBP"}
_BATCH = 64


def features() -> Any:
    """The column schema (plain lists, not ``Sequence``, so any datasets version reads it)."""
    from datasets import Features, Image, Value

    text = Value("string")
    message = {"role": text, "content": [{"type": text, "text": text}]}
    return Features({
        "id": text, "image_id": text, "images": [Image()],
        "prompt": [message], "completion": [message],
        "rating": text, "category": text, "augmentation": text,
        "policy": text, "allow": [text], "sensitive": [text],
    })  # fmt: skip


@lru_cache(maxsize=16)  # an image's samples are written one after another
def image_bytes(path: str) -> tuple[bytes, str]:
    """(bytes, name) to embed: the file itself, or the PNG of its normalised pixels."""
    from PIL import Image

    from llavaguard.inputs.images import load_image

    p = Path(path)
    try:
        pixels = load_image(p)  # checks and decodes the whole file: one line if it is broken
    except ImageError as e:
        raise ConfigError(f"hf export: {e}") from None
    with Image.open(p) as im:
        as_is = (im.format in _AS_IS and im.mode == "RGB" and getattr(im, "n_frames", 1) == 1
                 and im.getexif().get(0x0112, 1) == 1)  # fmt: skip
    if as_is:
        return p.read_bytes(), p.name
    buf = io.BytesIO()
    pixels.save(buf, format="PNG")
    return buf.getvalue(), p.stem + ".png"


def rows(samples: Iterable[LabelledSample]) -> Iterator[dict]:
    """One row per sample; ``augmentation`` is None for the default policy, as in labels."""
    from llavaguard.dataset.rows import to_trl

    for s in samples:
        trl = to_trl([s])[0]
        data, name = image_bytes(s.image)
        yield {
            "id": s.id, "image_id": s.image_id, "images": [{"bytes": data, "path": name}],
            "prompt": trl["prompt"], "completion": trl["completion"],
            "rating": s.rating, "category": s.category, "augmentation": s.augmentation,
            "policy": s.policy.name, "allow": list(s.policy.allowed),
            "sensitive": list(s.policy.sensitive),
        }  # fmt: skip


def _write_arrow(samples: Sequence[LabelledSample], feats: Any, path: Path) -> None:
    """Encode in batches into an Arrow stream file, the format ``Dataset.from_file`` maps."""
    import pyarrow as pa

    schema = feats.arrow_schema
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        batch: list[dict] = []
        for row in rows(samples):
            batch.append(row)
            if len(batch) == _BATCH:
                writer.write_table(_table(batch, feats, schema))
                batch = []
        if batch:
            writer.write_table(_table(batch, feats, schema))


def _table(batch: list[dict], feats: Any, schema: Any) -> Any:
    import pyarrow as pa

    columns = {k: [r[k] for r in batch] for k in feats}
    return pa.Table.from_pydict(feats.encode_batch(columns), schema=schema)


def write_hf(
    parts: Mapping[str, Sequence[LabelledSample]], folder: Path, description: str = ""
) -> None:
    """``DatasetDict(parts).save_to_disk(folder)``, written beside it and renamed into place
    so a failed build never leaves a half folder behind. A split without samples is left out
    (``datasets`` cannot load an empty one back)."""
    parts = {name: part for name, part in parts.items() if part}
    missing = sorted({s.image for part in parts.values() for s in part
                      if not Path(s.image).is_file()})  # fmt: skip
    if missing:
        raise ConfigError(f"hf export: image not found: {missing[0]} ({len(missing)} missing; "
                          "--formats without hf skips the export that embeds images)")  # fmt: skip
    from datasets import Dataset, DatasetDict, DatasetInfo

    feats = features()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}-") as tmp:
        splits = {}
        for name, part in parts.items():
            arrow = Path(tmp) / f"{name}.arrow"
            _write_arrow(part, feats, arrow)
            info = DatasetInfo(description=description, features=feats)
            splits[name] = Dataset.from_file(str(arrow), info=info, split=name)
        staged = Path(tmp) / "hf"
        DatasetDict(splits).save_to_disk(str(staged))
        del splits
        if folder.exists():
            shutil.rmtree(folder)
        staged.rename(folder)
    image_bytes.cache_clear()
