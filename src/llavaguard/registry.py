"""One registry helper for every table of names (engines, sources, sinks, filters, ...).

A registry maps a name a user types to the thing it stands for. Entries may be given as
``"module:attribute"`` strings so that naming an engine does not import torch; the module is
imported the first time the name is looked up. Every failed lookup is the same one-line
error, listing the valid names, so a typo is fixed from the message alone.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from llavaguard.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> objects of one kind (``kind`` is how error messages call them)."""

    def __init__(
        self, kind: str, entries: dict[str, T | str] | None = None, also: tuple[str, ...] = ()
    ) -> None:
        """``also``: names callers accept beside the entries (``auto``, ``all``), listed first
        in the lookup error."""
        self.kind = kind
        self._entries: dict[str, T | str] = dict(entries or {})
        self.also = also

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
            valid = ", ".join([*self.also, *self.names()])
            raise ConfigError(f"unknown {self.kind} {name!r} (valid: {valid})") from None
        if isinstance(entry, str) and ":" in entry:
            module, attr = entry.split(":", 1)
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    __getitem__ = get

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
