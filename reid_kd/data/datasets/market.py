"""Market-1501 (Zheng et al., ICCV 2015): 1501 persons, 6 cameras.

Layout: `<root>/Market-1501-v15.09.15/` holding `bounding_box_train/`, `query/`,
`bounding_box_test/` with files `PPPP_cCsS_FFFFFF_BB.jpg`. Identity -1 marks junk detections and is
dropped; identity 0 marks distractors and is kept in the gallery, as the official protocol does.
The built-in synthetic persons (`synth_market`) are written in this layout and read by this loader.
"""
from __future__ import annotations

import re
from pathlib import Path

from reid_kd.data import synth, synth_person
from reid_kd.data.datasets.base import Item, ReIDDataset, relabel, require_dirs

LAYOUT = "bounding_box_train/, query/, bounding_box_test/ holding PPPP_cCsS_FFFFFF_BB.jpg files"
PATTERN = re.compile(r"^(-?\d+)_c(\d)s\d+_\d+_\d+\.jpg$")
FOLDER_NAMES = ("Market-1501-v15.09.15", "Market-1501", "market1501")


def _read_split(folder: Path, pattern: re.Pattern, bad: list[str]) -> list[Item]:
    items = []
    for path in sorted(folder.glob("*.jpg")):
        m = pattern.match(path.name)
        if m is None:
            bad.append(str(path))
            continue
        if int(m.group(1)) == -1:
            continue
        items.append(Item(str(path), int(m.group(1)), int(m.group(2)) - 1))
    return items


def load_market_layout(root: Path, name: str, pattern: re.Pattern = PATTERN, layout: str = LAYOUT) -> ReIDDataset:
    """Market-1501's three folders; `pattern` captures (identity, 1-based camera) of a file name."""
    require_dirs(root, name, layout, "bounding_box_train", "query", "bounding_box_test")
    bad: list[str] = []
    return ReIDDataset(
        name=name,
        train=relabel(_read_split(root / "bounding_box_train", pattern, bad)),
        query=_read_split(root / "query", pattern, bad),
        gallery=_read_split(root / "bounding_box_test", pattern, bad),
        root=root,
        bad_files=bad,
    )


def find_folder(root: Path, names: tuple[str, ...]) -> Path:
    """The first of a dataset's usual folder names present under `root` (else the first name)."""
    root = Path(root)
    return next((root / n for n in names if (root / n).is_dir()), root / names[0])


def market1501(root: Path) -> ReIDDataset:
    return load_market_layout(find_folder(root, FOLDER_NAMES), "market1501")


def synth_market(root: Path, generate: bool = True, **spec: int) -> ReIDDataset:
    """The procedurally generated persons of `data.synth` (`spec`), written on first use (see
    reid_kd.data.synth_person)."""
    folder = Path(root) / "synth_market"  # read as it is without `generate` (what `reidkd data check` asks)
    folder = synth_person.ensure(folder, synth.SynthSpec(**spec)) if generate else folder
    return load_market_layout(folder, "synth_market")
