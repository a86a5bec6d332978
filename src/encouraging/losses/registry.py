"""A named registry (timm's pattern): register once, list with an fnmatch filter, get with a clear error."""

from __future__ import annotations

import fnmatch
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Items by name. ``kind`` names them in errors: ``bonus must be one of [...], got 'x'``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        """Add ``item`` under ``name``; a name can be registered once."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def names(self, filter: str = "*") -> list[str]:
        """Registered names matching an fnmatch pattern, sorted."""
        return sorted(n for n in self._items if fnmatch.fnmatch(n, filter))

    def get(self, name: str) -> T:
        """The item called ``name``; an unknown name lists the valid ones."""
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(f"{self.kind} must be one of {self.names()}, got {name!r}") from None

    def remove(self, name: str) -> T:
        """Take ``name`` out again (tests and plugins that register temporarily)."""
        return self._items.pop(name)

    def __contains__(self, name: object) -> bool:
        return name in self._items
