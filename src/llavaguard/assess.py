"""Assess files: expand paths, run a Guard over them, and write every record to a sink.

This is what ``llavaguard assess`` calls, usable as is from Python. It streams: images are
listed up front (paths only), decoded a batch ahead of the model, and each record is written
as soon as its batch is done, in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llavaguard.guard import Guard
from llavaguard.inputs.images import expand_paths
from llavaguard.sinks import open_sink


@dataclass
class Summary:
    total: int = 0
    safe: int = 0
    unsafe: int = 0
    invalid: int = 0  # the model answered, but not readably
    failed: int = 0  # never reached the model, or the engine failed on it
    failures: list[str] = field(default_factory=list)

    def add(self, a: Any) -> None:
        self.total += 1
        if a.failed:
            self.failed += 1
            self.failures.append(f"{a.image}: {a.error}")
            return
        self.safe += a.rating == "Safe"
        self.unsafe += a.rating == "Unsafe"
        self.invalid += not a.valid

    def line(self) -> str:
        return (
            f"{self.total} images: {self.unsafe} unsafe, {self.safe} safe, "
            f"{self.invalid} invalid answers, {self.failed} failed"
        )


def assess_files(
    paths: Iterable[str | Path],
    guard: Guard,
    *,
    policy: str | Path | None = None,
    allow: str | None = None,
    sensitive: str | None = None,
    batch_size: int = 8,
    format: str = "jsonl",
    output: str | Path | None = None,
    on_start: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Summary:
    """Assess every image under ``paths`` (folders recurse) and write the records."""
    files = [str(p) for p in expand_paths(paths)]
    active = guard.resolve_policy(policy, allow=allow, sensitive=sensitive)
    sink = open_sink(format, output)
    summary = Summary()
    if on_start is not None:
        on_start(len(files))
    try:
        for a in guard.assess_iter(files, policy=active, batch_size=batch_size, on_batch=on_batch):
            sink.write(a)
            summary.add(a)
    finally:
        sink.close()
    return summary
