"""Training rows from labelled samples, one pure converter per trainer's format: LLaVA's
conversations, TRL's conversational prompt/completion, LLaMA-Factory's sharegpt. The writers
(``dataset.exports``) and the Hugging Face folder (``dataset.hf``) both build on these."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llavaguard.inputs.labels import LabelledSample


def to_llava(samples: Sequence[LabelledSample]) -> list[dict]:
    """The original LLaVA conversation format: the image first, then the policy."""
    return [
        {
            "id": s.id,
            "image": s.image,
            "conversations": [
                {"from": "human", "value": "<image>\n" + s.policy.text},
                {"from": "gpt", "value": s.answer()},
            ],
        }
        for s in samples
    ]


def to_trl(samples: Sequence[LabelledSample]) -> list[dict]:
    """TRL's conversational prompt/completion rows with the image path beside them."""
    return [
        {
            "id": s.id,
            "images": [s.image],
            "prompt": [
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "text", "text": s.policy.text}],
                }
            ],
            "completion": [
                {"role": "assistant", "content": [{"type": "text", "text": s.answer()}]}
            ],
        }
        for s in samples
    ]


def to_sharegpt(samples: Sequence[LabelledSample]) -> list[dict]:
    """LLaMA-Factory's multimodal sharegpt rows (its ``mllm_demo`` layout): one ``<image>`` in
    the user turn, written as in the LLaVA export, and the image path in ``images``; ``id`` is
    extra (LLaMA-Factory drops columns it is not told about)."""
    return [
        {
            "id": s.id,
            "messages": [
                {"role": "user", "content": "<image>\n" + s.policy.text},
                {"role": "assistant", "content": s.answer()},
            ],
            "images": [s.image],
        }
        for s in samples
    ]
