"""What every dataset loader returns, the registry, and the checks shared by all loaders."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


class DatasetLayoutError(FileNotFoundError):
    """A dataset folder is missing or not laid out as its loader expects; the message says how."""


@dataclass(frozen=True)
class Item:
    path: str
    pid: int
    camid: int


@dataclass
class ReIDDataset:
    """Train items relabelled to 0..N-1; query and gallery keep their original ids (0-based cams)."""

    name: str
    train: list[Item]
    query: list[Item]
    gallery: list[Item]
    root: Path | None = None
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def num_train_pids(self) -> int:
        return len({it.pid for it in self.train})

    def summary(self) -> str:
        rows = [("train", self.train), ("query", self.query), ("gallery", self.gallery)]
        lines = [f"{self.name}: {'split':8} {'images':>8} {'ids':>6} {'cams':>5}"]
        for split, items in rows:
            lines.append(f"{'':{len(self.name) + 2}}{split:8} {len(items):8d} {len({i.pid for i in items}):6d} "
                         f"{len({i.camid for i in items}):5d}")
        return "\n".join(lines)


DATASETS: dict[str, Callable[..., ReIDDataset]] = {}


def register(name: str):
    """Register a loader `fn(root: Path, **options) -> ReIDDataset` under `name`."""
    def wrap(fn):
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} registered twice")
        DATASETS[name] = fn
        return fn
    return wrap


def relabel(items: list[Item]) -> list[Item]:
    """Map train identities to 0..N-1 in sorted order, so classifiers and datasets combine safely."""
    mapping = {pid: i for i, pid in enumerate(sorted({it.pid for it in items}))}
    return [Item(it.path, mapping[it.pid], it.camid) for it in items]


def require_dirs(root: Path, dataset: str, layout: str, *subdirs: str) -> None:
    """Stop with one line naming the missing folder and the layout the loader expects."""
    for sub in ("", *subdirs):
        folder = root / sub if sub else root
        if not folder.is_dir():
            raise DatasetLayoutError(f"{dataset}: folder not found: {folder} (expected layout: {layout})")
