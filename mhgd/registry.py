"""One registry mechanism for everything a config names: methods, models, data sets, samplers,
pruners.

A registry maps a config name to an object. Entries register themselves where they are defined
(``@register`` on a method class, ``@MODELS.register("vgg7")`` on a model builder); the registry
imports every module of its package the first time it is asked, so a new file in the package
is all it takes to add an entry: no import to add anywhere else. Importing this module costs
nothing (no torch), so light code (the CLI, the config spine) may hold a registry.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from mhgd.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to objects of one kind, filled by discovering the modules of ``package``.

    ``how_to_add`` finishes the error for an unknown name, so the user learns the choices and
    how to make a new one in the same line.
    """

    def __init__(self, kind: str, package: str | None, how_to_add: str) -> None:
        self.kind, self.package, self.how_to_add = kind, package, how_to_add
        self._entries: dict[str, T] = {}
        self._discovered = package is None

    def register(self, name: str) -> Callable[[T], T]:
        """``@REG.register("name")``: a decorator that adds what it decorates."""
        return lambda entry: self.add(name, entry)

    def add(self, name: str, entry: T) -> T:
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = entry
        return entry

    def discover(self) -> None:
        """Import every module of the package once (each registers its own entries)."""
        if self._discovered:
            return
        self._discovered = True
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__, prefix=f"{self.package}."):
            importlib.import_module(module.name)

    def get(self, name: str) -> T:
        self.discover()
        if name not in self._entries:
            raise ConfigError(
                f"unknown {self.kind} {name!r}: choose one of {', '.join(self.names())}. "
                f"To add one: {self.how_to_add}"
            )
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        self.discover()
        return tuple(sorted(self._entries))

    def items(self) -> Iterator[tuple[str, T]]:
        self.discover()
        return iter(sorted(self._entries.items()))

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._entries
