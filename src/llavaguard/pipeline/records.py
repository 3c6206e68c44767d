"""What a step's statuses mean, for every executor: one definition of a failed item.

A record that the model answered is never failed, however unreadable the answer: it is
*invalid* (``rating`` None or ``valid`` False, with ``raw`` kept) and counted as assessed, as
README's record table says (``error`` with ``raw: null``: the input never reached the model).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FAILED = "failed"


def is_failed(record: Mapping[str, Any]) -> bool:
    """No answer: the input never reached the model, or the engine failed on it. A record with
    the model's text (``raw``) or a rating is an answer, readable or not."""
    return (
        record.get("error") is not None
        and record.get("raw") is None
        and record.get("rating") is None
    )
