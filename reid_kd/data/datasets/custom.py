"""Bring-your-own data without code: a CSV file or a folder per identity.

`custom_csv` reads the CSV named by `data.custom_csv.path` (relative paths from `data.root`), with a
header line `path,id,camera,split`: `path` is the image, relative to the CSV's folder or absolute;
`id` any identity label (numbers are kept, other labels numbered in sorted order); `camera` any
camera label, or empty on every row when cameras are unknown; `split` one of train, query,
gallery. Rows with another split are skipped and reported by `reidkd data check`.

`custom_folder` reads the folder named by `data.custom_folder.path`, laid out as
`train/<identity>/*.jpg`, `query/<identity>/*.jpg`, `gallery/<identity>/*.jpg` (also .jpeg and
.png); it records no camera.

Without cameras (`has_cameras` False) evaluation keeps every gallery image of the query's identity,
so query and gallery should hold different images.
"""
from __future__ import annotations

import csv
from pathlib import Path

from reid_kd.data.datasets.base import DatasetLayoutError, Item, ReIDDataset, relabel, require_dirs

SPLITS = ("train", "query", "gallery")
COLUMNS = ("path", "id", "camera", "split")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _numbering(labels: set[str]) -> dict[str, int]:
    """Integer labels keep their value; otherwise labels are numbered 0.. in sorted order."""
    if all(label.lstrip("-").isdigit() for label in labels):
        return {label: int(label) for label in labels}
    return {label: i for i, label in enumerate(sorted(labels))}


def _resolve(root: Path, value: str | None, dataset: str) -> Path:
    if not value:
        raise DatasetLayoutError(f"{dataset}: no path given: set data.{dataset}.path=PATH (relative to data.root "
                                 f"{root}, or absolute)")
    path = Path(value)
    return path if path.is_absolute() else root / path


def _dataset(name: str, rows: list[tuple[str, str, str, str]], folder: Path, has_cameras: bool,
             bad: list[str]) -> ReIDDataset:
    ids = _numbering({r[1] for r in rows})
    cams = {c: i for i, c in enumerate(sorted({r[2] for r in rows},
                                              key=lambda c: (0, int(c), c) if c.isdigit() else (1, 0, c)))}
    splits: dict[str, list[Item]] = {s: [] for s in SPLITS}
    for path, pid, cam, split in rows:
        splits[split].append(Item(path, ids[pid], cams[cam] if has_cameras else 0))
    return ReIDDataset(name=name, train=relabel(splits["train"]), query=splits["query"], gallery=splits["gallery"],
                       root=folder, has_cameras=has_cameras, bad_files=bad)


def custom_csv(root: Path, path: str | None) -> ReIDDataset:
    listing = _resolve(Path(root), path, "custom_csv")
    if not listing.is_file():
        raise DatasetLayoutError(f"custom_csv: CSV file not found: {listing} (expected columns: {','.join(COLUMNS)})")
    with listing.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetLayoutError(f"custom_csv: {listing} lacks the column(s) {', '.join(missing)} "
                                     f"(expected header: {','.join(COLUMNS)})")
        lines = [(n + 2, {k: (v or "").strip() for k, v in row.items() if k}) for n, row in enumerate(reader)]
    rows, bad = [], []
    for line, row in lines:
        if row["split"] not in SPLITS or not row["path"] or not row["id"]:
            bad.append(f"{listing.name} line {line}: {','.join(row[c] for c in COLUMNS)}")
            continue
        image = Path(row["path"])
        image = image if image.is_absolute() else listing.parent / image
        rows.append((str(image), row["id"], row["camera"], row["split"]))
    with_camera = sum(1 for r in rows if r[2])
    if 0 < with_camera < len(rows):
        raise DatasetLayoutError(f"custom_csv: {listing}: the camera column is filled on {with_camera} of {len(rows)} "
                                 f"rows; fill it on every row or leave it empty on every row")
    return _dataset("custom_csv", rows, listing.parent, with_camera > 0, bad)


def custom_folder(root: Path, path: str | None) -> ReIDDataset:
    folder = _resolve(Path(root), path, "custom_folder")
    require_dirs(folder, "custom_folder", "train/<identity>/*.jpg, query/<identity>/*.jpg, gallery/<identity>/*.jpg",
                 *SPLITS)
    rows, bad = [], []
    for split in SPLITS:
        for entry in sorted((folder / split).iterdir()):
            if not entry.is_dir():
                bad.append(str(entry))  # a file beside the identity folders
                continue
            for image in sorted(entry.iterdir()):
                if image.suffix.lower() in IMAGE_SUFFIXES:
                    rows.append((str(image), entry.name, "", split))
                else:
                    bad.append(str(image))
    return _dataset("custom_folder", rows, folder, False, bad)
