"""A pipeline step: items in, one row per item out, idempotent by the item's id.

A step is built on the driver and may be pickled to Ray actors, so heavy state (a model)
is made in ``setup``, which an executor calls once, where the step runs, before the first
batch (and only when there is work). ``prepare`` is the part that may run ahead on reader
threads (reading and decoding); ``process`` is the batched part (the model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Result:
    """One item's row, and what happened to it (``assessed``, ``cached``, ``failed``, ``ok``...);
    executors count the statuses, writers may route rows by them."""

    row: dict[str, Any]
    status: str


class Step:
    """Subclasses implement ``process``; the rest has defaults."""

    def id_of(self, item: Any) -> str:
        """The stable id a rerun recognises the item by."""
        return str(item.id)

    def prepare(self, item: Any) -> Any:
        """Per-item work that can run ahead of the batch (reading, decoding)."""
        return item

    def setup(self) -> None:
        """Load what the step needs (a model); called once where the step runs."""

    def process(self, batch: Sequence[Any]) -> list[Result]:
        """One result per prepared item (in the order they are finished)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what ``setup`` loaded."""
