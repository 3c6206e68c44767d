"""Where assessments go: JSON Lines, a JSON array, or a table for people.

JSON Lines is written and flushed record by record, so whatever was assessed before a crash
or Ctrl-C is on disk. Sinks take records in input order and know nothing about models.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

from llavaguard.errors import ConfigError
from llavaguard.guard.assessment import Assessment
from llavaguard.registry import Registry


class Sink(Protocol):
    def write(self, assessment: Assessment) -> None: ...
    def close(self) -> None: ...


def record(a: Assessment) -> dict:
    return a.model_dump(mode="json")


class JsonlSink:
    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, assessment: Assessment) -> None:
        self.stream.write(json.dumps(record(assessment), ensure_ascii=False) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


class JsonSink:
    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.records: list[dict] = []

    def write(self, assessment: Assessment) -> None:
        self.records.append(record(assessment))

    def close(self) -> None:
        json.dump(self.records, self.stream, ensure_ascii=False, indent=2)
        self.stream.write("\n")
        self.stream.flush()


class TableSink:
    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.rows: list[Assessment] = []

    def write(self, assessment: Assessment) -> None:
        self.rows.append(assessment)

    def close(self) -> None:
        from rich.console import Console
        from rich.table import Table

        table = Table("image", "rating", "category", "score", "valid", "rationale / error")
        for a in self.rows:
            style = {"Unsafe": "red", "Safe": "green"}.get(a.rating or "", "yellow")
            note = a.rationale if a.valid else (a.error or "")
            table.add_row(
                a.image,
                f"[{style}]{a.rating or '-'}[/]",
                a.category or "-",
                "-" if a.score is None else f"{a.score:.3f}",
                "yes" if a.valid else "no",
                (note or "")[:120],
            )
        Console(file=self.stream, width=None if self.stream.isatty() else 160).print(table)


FORMATS: Registry[Callable[[IO[str]], Sink]] = Registry(
    "format", {"jsonl": JsonlSink, "json": JsonSink, "table": TableSink}
)


class FileSink:
    """Wraps a sink so the file it writes to is closed with it."""

    def __init__(self, fmt: str, path: Path) -> None:
        try:
            self.stream = path.open("w", encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{path}: cannot write output ({e.strerror or e})") from e
        self.inner = FORMATS.get(fmt)(self.stream)

    def write(self, assessment: Assessment) -> None:
        self.inner.write(assessment)

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.stream.close()


def open_sink(fmt: str = "jsonl", output: str | Path | None = None) -> Sink:
    """A sink writing ``fmt`` to a file, or to stdout when output is None or '-'."""
    sink = FORMATS.get(fmt)
    if output is None or str(output) == "-":
        return sink(sys.stdout)
    return FileSink(fmt, Path(output))
