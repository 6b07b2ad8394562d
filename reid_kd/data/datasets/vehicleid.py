"""VehicleID (Liu et al., CVPR 2016): 26267 vehicles, no camera ids.

Layout: `<root>/VehicleID_V1.0/` holding `image/NNNNNNN.jpg` and `train_test_split/` with
`train_list.txt` and `test_list_800.txt`, `test_list_1600.txt`, `test_list_2400.txt`,
`test_list_13164.txt`; a list line is `NNNNNNN ID` (image name without `.jpg`, vehicle id).

Protocol quirk: there is no query/gallery split and no camera. For each test identity one image,
drawn at random, is the gallery and the others are queries; the figure reported is the mean over
10 such draws. Draw i uses the seed (`data.vehicleid.draw_seed`, i); all `data.vehicleid.draws`
draws are kept in `ReIDDataset.draws` (evaluation averages them) and `query` / `gallery` are draw
0. Camera ids are all 0 and `has_cameras` is False, so evaluation keeps every gallery positive.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from reid_kd.data.datasets.base import DatasetLayoutError, Item, ReIDDataset, relabel, require_dirs

FOLDER_NAMES = ("VehicleID_V1.0", "VehicleID")
LAYOUT = "image/NNNNNNN.jpg and train_test_split/train_list.txt, test_list_{800,1600,2400,13164}.txt"


def _read_list(root: Path, listing: Path, bad: list[str]) -> list[Item]:
    if not listing.is_file():
        raise DatasetLayoutError(f"vehicleid: list file not found: {listing} (expected layout: {LAYOUT})")
    items = []
    for line in listing.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
            bad.append(f"{listing.name}: {line.strip()}")
            continue
        items.append(Item(str(root / "image" / f"{parts[0]}.jpg"), int(parts[1]), 0))
    return items


def draw_gallery(items: list[Item], seed: int, draw: int) -> tuple[list[Item], list[Item]]:
    """(query, gallery): one image per identity drawn with the seed (seed, draw) is the gallery."""
    by_id: dict[int, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        by_id[it.pid].append(i)
    rng = np.random.default_rng([seed, draw])
    chosen = {by_id[pid][int(rng.integers(len(by_id[pid])))] for pid in sorted(by_id)}
    query = [it for i, it in enumerate(items) if i not in chosen]
    gallery = [it for i, it in enumerate(items) if i in chosen]
    return query, gallery


def vehicleid(root: Path, test_size: int, draws: int, draw_seed: int) -> ReIDDataset:
    root = Path(root)
    folder = next((root / n for n in FOLDER_NAMES if (root / n).is_dir()), root / FOLDER_NAMES[0])
    require_dirs(folder, "vehicleid", LAYOUT, "image", "train_test_split")
    bad: list[str] = []
    train = _read_list(folder, folder / "train_test_split" / "train_list.txt", bad)
    test = _read_list(folder, folder / "train_test_split" / f"test_list_{test_size}.txt", bad)
    drawn = [draw_gallery(test, draw_seed, d) for d in range(draws)]
    return ReIDDataset(
        name="vehicleid",
        train=relabel(train),
        query=drawn[0][0],
        gallery=drawn[0][1],
        root=folder,
        notes={"test_size": str(test_size), "draws": str(draws)},
        has_cameras=False,
        draws=drawn,
        bad_files=bad,
    )
