"""A work unit's results, written by the worker that made them: the exactly-once half of a
distributed run.

    folder/
      part-u-<unit>.parquet   every row of the unit, written whole (temporary name, fsync,
                              rename) once the unit is finished
      _units/<unit>.json      the completion marker, written after it: rows, failed, seconds

A unit's files are named after the unit, never after the worker or the attempt, so a unit
done twice (its first worker presumed dead, a driver killed and restarted) replaces its own
file instead of adding a second one: one row per input, whatever was killed. A unit with a
marker is skipped; one whose marker counts failed rows is redone for those rows only (its
answered rows are kept); one without a marker is redone whole, keeping the answered rows of
a file written before the kill.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llavaguard.pipeline.shards import UNIT_PREFIX, UNITS, make_table, warn, write_parquet
from llavaguard.pipeline.writer import atomic_write, crash_point

State = Literal["todo", "redo", "done"]


@dataclass(frozen=True)
class UnitOutput:
    """Where units' rows go; small and picklable, so every worker holds one. ``answered``:
    the column a row has when its input got an answer (rows without it are redone)."""

    root: Path
    schema: Callable[[], Any] | None = None
    run: dict[str, Any] | None = None  # stamped into each file, as ShardWriter does
    answered: str | None = None

    def path(self, name: str) -> Path:
        return self.root / f"{UNIT_PREFIX}{name}.parquet"

    def marker(self, name: str) -> Path:
        return self.root / UNITS / f"{name}.json"

    def state(self, name: str) -> tuple[State, int]:
        """``done`` (skip it), ``redo`` (finished with failed rows) or ``todo``, and the rows
        the marker counts: one small read and a file check, never the rows themselves."""
        try:
            doc = json.loads(self.marker(name).read_text(encoding="utf-8"))
            rows = int(doc["rows"])
        except (OSError, ValueError, KeyError, TypeError):
            return "todo", 0
        if not self.path(name).exists():
            return "todo", 0
        return ("redo" if doc.get("failed") else "done"), rows

    def starting(self, name: str, token: str) -> Path:
        """Where a worker notes that it began the unit for the try ``token``: a try whose
        worker died had begun (charge the unit), one refused by an actor that was
        restarting had not (try again, uncharged). Ray's errors do not tell the two apart."""
        return self.root / UNITS / f".{name}.{token}.started"

    def kept(self, name: str) -> list[dict[str, Any]]:
        """The answered rows of the unit's file from an earlier attempt, if it has one."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        path = self.path(name)
        if not path.exists():
            return []
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as e:
            warn(f"{path.name} cannot be read ({e.__class__.__name__}); its unit is redone whole")
            return []
        if self.answered is not None and self.answered in table.column_names:
            table = table.filter(pc.is_valid(table.column(self.answered)))
        return table.replace_schema_metadata(None).to_pylist()

    def write(self, name: str, rows: Sequence[dict[str, Any]], info: dict[str, Any]) -> None:
        """The unit's rows, then its marker (``info``: what the marker records)."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_parquet(self.path(name), make_table(rows, self.schema, self.run), crash="shard")
        crash_point("unit")  # tests: a worker dying between the rows and the marker
        (self.root / UNITS).mkdir(exist_ok=True)
        doc = {"unit": name, "rows": len(rows), **info}
        atomic_write(self.marker(name), (json.dumps(doc) + "\n").encode())
