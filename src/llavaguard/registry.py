"""One registry helper for every table of names (engines, sources, sinks, filters, ...).

A registry maps a name a user types to the thing it stands for. Entries may be given as
``"module:attribute"`` strings so that naming an engine does not import torch; the module is
imported the first time the name is looked up. Every failed lookup is the same one-line
error, listing the valid names, so a typo is fixed from the message alone.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from llavaguard.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> objects of one kind (``kind`` is how error messages call them)."""

    def __init__(self, kind: str, entries: dict[str, T | str] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = dict(entries or {})

    def register(self, name: str, target: T | str | None = None) -> Any:
        """Add ``name``; used bare as a decorator (``@registry.register("x")``) too."""
        if target is not None:
            self._entries[name] = target
            return target

        def decorate(obj: Any) -> Any:
            self._entries[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        try:
            entry = self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r} (valid: {', '.join(self.names())})"
            ) from None
        if isinstance(entry, str) and ":" in entry:
            module, attr = entry.split(":", 1)
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def get_many(self, names: list[str]) -> list[T]:
        """Look up several names; the first unknown one is the error."""
        return [self.get(n) for n in names]

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def check_names(kind: str, names: list[str], valid: list[str] | Callable[[], list[str]]) -> None:
    """Refuse the first name that is not among ``valid`` with the registry's one-line error."""
    allowed = valid() if callable(valid) else valid
    for name in names:
        if name not in allowed:
            raise ConfigError(f"unknown {kind} {name!r} (valid: {', '.join(allowed)})")
