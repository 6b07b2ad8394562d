"""One Registry class for everything a config names: datasets, backbones, distillers, pretraining sources.

An entry is declared in a light module of its layer with its target as "module:attr", imported only
when the entry is built, so names, option schemas and static facts (a backbone's stage widths) are
readable without importing torch or OpenCV: a config mistake is told before any heavy import.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Iterator

from reid_kd.errors import UserError, did_you_mean
from reid_kd.schema import defaults


class UnknownNameError(UserError, ValueError):
    """A name no entry of the registry has; the message offers the closest one and lists them all."""


@dataclass(frozen=True)
class Entry:
    """`options`: the config schema of the entry's own options (defaults, types, bounds); `sources`:
    option -> where its default comes from; `info`: static facts (e.g. a backbone's stage widths)."""

    name: str
    target: str | None = None
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Any:
        """The target object ("module:attr"), imported now."""
        if self.target is None:
            raise ValueError(f"{self.name!r} has no target to load")
        module, attr = self.target.split(":")
        return getattr(importlib.import_module(module), attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Build the entry: its target called with these arguments."""
        return self.load()(*args, **kwargs)


class Registry:
    """name -> Entry; a miss raises UnknownNameError with a did-you-mean. An entry named "family:<name>"
    stands for every "family:anything" (e.g. `timm:<name>`, any timm model)."""

    def __init__(self, kind: str):
        self.kind = kind  # "dataset", "backbone", ...: the word error messages use
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, target: str | None = None, description: str = "", options: dict | None = None,
            sources: dict | None = None, **info: Any) -> Entry:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        entry = Entry(name, target, description, dict(options or {}), dict(sources or {}), info)
        self._entries[name] = entry
        return entry

    def __getitem__(self, name: str) -> Entry:
        entry = self._find(name)
        if entry is None:
            raise UnknownNameError(f"unknown {self.kind} {name!r}{did_you_mean(name, self._entries)}; "
                                   f"registered: {', '.join(self.names())}")
        return entry

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._find(name) is not None

    def _find(self, name: str) -> Entry | None:
        family, _, member = name.partition(":")
        return self._entries.get(name) or (self._entries.get(f"{family}:<name>") if member else None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, Entry]]:
        return [(name, self._entries[name]) for name in self.names()]

    def load(self, name: str) -> Any:
        """The target of entry `name`, imported now."""
        return self[name].load()


def default_values(entry: Entry) -> dict[str, Any]:
    """An entry's option defaults as plain values (the schema's leaves unwrapped)."""
    return defaults(entry.options)
