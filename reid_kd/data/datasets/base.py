"""What every dataset loader returns and the checks shared by all loaders (the registry: `data/catalog.py`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from reid_kd.errors import UserError


class DatasetLayoutError(UserError, FileNotFoundError):
    """A dataset folder is missing or not laid out as its loader expects; the message says how."""


@dataclass(frozen=True)
class Item:
    path: str
    pid: int
    camid: int


@dataclass
class ReIDDataset:
    """Train items relabelled to 0..N-1; query and gallery keep their original ids (0-based cams).

    `has_cameras` is False where the dataset records no camera (VehicleID, custom data without a
    camera column): evaluation then keeps gallery images of the query's identity whatever their
    camera id. `bad_files` are files in the dataset's folders or lists that the loader skipped
    because their names do not follow the dataset's pattern (`reidkd data check` reports them).
    `draws`, when set, are several (query, gallery) splits of the same test images
    (VehicleID's seeded gallery draws); the figure reported is the mean over them, and `query` /
    `gallery` are the first draw.
    """

    name: str
    train: list[Item]
    query: list[Item]
    gallery: list[Item]
    root: Path | None = None
    notes: dict[str, str] = field(default_factory=dict)
    has_cameras: bool = True
    draws: list[tuple[list[Item], list[Item]]] | None = None
    bad_files: list[str] = field(default_factory=list)

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


def relabel(items: list[Item]) -> list[Item]:
    """Map train identities to 0..N-1 in sorted order, so classifiers and datasets combine safely."""
    mapping = {pid: i for i, pid in enumerate(sorted({it.pid for it in items}))}
    return [Item(it.path, mapping[it.pid], it.camid) for it in items]


def combine_train(datasets: list[ReIDDataset]) -> list[Item]:
    """The train splits of several datasets as one, identities kept apart by a dataset prefix.

    Each dataset's ids are keyed as (dataset name, id) before relabelling to 0..N-1, so id 5 of one
    dataset never merges with id 5 of another; cameras are offset so they stay distinct too.
    """
    keyed, cam_offset = [], 0
    for ds in datasets:
        keyed += [((ds.name, it.pid), it.path, it.camid + cam_offset) for it in ds.train]
        cam_offset += max((it.camid for it in ds.train), default=-1) + 1
    mapping = {key: i for i, key in enumerate(sorted({k for k, _, _ in keyed}))}
    return [Item(path, mapping[key], camid) for key, path, camid in keyed]


def require_dirs(root: Path, dataset: str, layout: str, *subdirs: str) -> None:
    """Stop with one line naming the missing folder and the layout the loader expects."""
    for sub in ("", *subdirs):
        folder = root / sub if sub else root
        if not folder.is_dir():
            raise DatasetLayoutError(f"{dataset}: folder not found: {folder} (expected layout: {layout})")
