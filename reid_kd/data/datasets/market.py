"""Market-1501 (Zheng et al., ICCV 2015): 1501 persons, 6 cameras.

Layout: `<root>/Market-1501-v15.09.15/` holding `bounding_box_train/`, `query/`,
`bounding_box_test/` with files `PPPP_cCsS_FFFFFF_BB.jpg`. Identity -1 marks junk detections and is
dropped; identity 0 marks distractors and is kept in the gallery, as the official protocol does.
"""
from __future__ import annotations

import re
from pathlib import Path

from reid_kd.data.datasets.base import Item, ReIDDataset, register, relabel, require_dirs

LAYOUT = "bounding_box_train/, query/, bounding_box_test/ holding PPPP_cCsS_FFFFFF_BB.jpg files"
PATTERN = re.compile(r"^(-?\d+)_c(\d)s\d+_\d+_\d+\.jpg$")
FOLDER_NAMES = ("Market-1501-v15.09.15", "Market-1501", "market1501")


def _read_split(folder: Path) -> list[Item]:
    items = []
    for path in sorted(folder.glob("*.jpg")):
        m = PATTERN.match(path.name)
        if m is None or int(m.group(1)) == -1:
            continue
        items.append(Item(str(path), int(m.group(1)), int(m.group(2)) - 1))
    return items


def load_market_layout(root: Path, name: str) -> ReIDDataset:
    require_dirs(root, name, LAYOUT, "bounding_box_train", "query", "bounding_box_test")
    return ReIDDataset(
        name=name,
        train=relabel(_read_split(root / "bounding_box_train")),
        query=_read_split(root / "query"),
        gallery=_read_split(root / "bounding_box_test"),
        root=root,
    )


@register("market1501")
def market1501(root: Path, **_: object) -> ReIDDataset:
    root = Path(root)
    folder = next((root / n for n in FOLDER_NAMES if (root / n).is_dir()), root / FOLDER_NAMES[0])
    return load_market_layout(folder, "market1501")
