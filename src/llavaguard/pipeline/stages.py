"""Whole-stage completion markers: a multi-stage run that resumes after its last finished stage.

    folder/_stages/
      _manifest.json     the run's settings; a rerun with other settings is refused
      <stage>.started    while a stage runs: a rerun resumes it (``resuming``) or starts it over
      <stage>.done.json  written (atomically) when the stage finished, with what it returned

``Stages.run(name, fn)`` calls ``fn`` unless its marker exists, and returns what ``fn``
returned then (JSON-ready values only). A stage killed midway leaves no done marker and runs
again; ``resuming(name)`` tells it whether it may continue from its own unfinished output.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llavaguard.errors import ConfigError
from llavaguard.pipeline.writer import atomic_write


class Stages:
    def __init__(self, root: Path, settings: dict[str, Any]) -> None:
        self.dir = Path(root) / "_stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.timings: dict[str, float] = {}
        manifest = self.dir / "_manifest.json"
        if manifest.exists():
            theirs = json.loads(manifest.read_text(encoding="utf-8"))
            diff = [
                k for k in sorted(set(theirs) | set(settings)) if theirs.get(k) != settings.get(k)
            ]
            if diff:
                k = diff[0]
                raise ConfigError(
                    f"{root} holds a run with {k} {theirs.get(k)!r}, not {settings.get(k)!r}; "
                    "use another output folder"
                )
        else:
            atomic_write(manifest, (json.dumps(settings, indent=2) + "\n").encode())

    def marker(self, name: str) -> Path:
        return self.dir / f"{name.replace(' ', '-')}.done.json"

    def done(self, name: str) -> bool:
        return self.marker(name).exists()

    def resuming(self, name: str) -> bool:
        """Whether an earlier run with these settings started this stage and did not finish."""
        return self.marker(name).with_suffix("").with_suffix(".started").exists()

    def run(self, name: str, fn: Callable[[], Any], say: Callable[[str], None] = print) -> Any:
        marker = self.marker(name)
        if marker.exists():
            doc = json.loads(marker.read_text(encoding="utf-8"))
            self.timings[name] = doc["seconds"]
            say(f"[{name}] done in an earlier run")
            return doc["result"]
        say(f"[{name}] ...")
        start = time.perf_counter()
        started = marker.with_suffix("").with_suffix(".started")
        started.touch()
        result = fn()
        seconds = round(time.perf_counter() - start, 1)
        self.timings[name] = seconds
        doc = {"stage": name, "seconds": seconds, "result": result}
        atomic_write(marker, (json.dumps(doc, indent=2, default=str) + "\n").encode())
        started.unlink()
        return json.loads(json.dumps(result, default=str))  # as a rerun would see it
