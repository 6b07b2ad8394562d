"""VeRi-776 (Liu et al., ICME 2016): 776 vehicles, 20 cameras.

Layout: `<root>/image_train/`, `image_query/`, `image_test/` with files `VVVV_cCCC_FFFFFFFF_0.jpg`
(vehicle id, 1-based camera, frame); the `name_*.txt` lists, when present, fix the order.
The built-in synthetic dataset (`synth_veri`) is written in this layout and read by this loader.
"""
from __future__ import annotations

import re
from pathlib import Path

from reid_kd.data import synth
from reid_kd.data.datasets.base import Item, ReIDDataset, relabel, require_dirs

LAYOUT = "image_train/, image_query/, image_test/ holding VVVV_cCCC_FFFFFFFF_0.jpg files, name_*.txt lists"
PATTERN = re.compile(r"^(\d+)_c(\d+)_\d+_\d+\.jpg$")


def _read_split(root: Path, folder: str, listing: str, bad: list[str]) -> list[Item]:
    names_file = root / listing
    if names_file.is_file():
        names = [n.strip() for n in names_file.read_text().split() if n.strip()]
    else:
        names = sorted(p.name for p in (root / folder).glob("*.jpg"))
    items = []
    for name in names:
        m = PATTERN.match(name)
        if m is None:
            bad.append(str(root / folder / name))  # `reidkd data check` reports such files; training skips them
            continue
        items.append(Item(str(root / folder / name), int(m.group(1)), int(m.group(2)) - 1))
    return items


def load_veri_layout(root: Path, name: str) -> ReIDDataset:
    require_dirs(root, name, LAYOUT, "image_train", "image_query", "image_test")
    bad: list[str] = []
    return ReIDDataset(
        name=name,
        train=relabel(_read_split(root, "image_train", "name_train.txt", bad)),
        query=_read_split(root, "image_query", "name_query.txt", bad),
        gallery=_read_split(root, "image_test", "name_test.txt", bad),
        root=root,
        bad_files=bad,
    )


def veri776(root: Path) -> ReIDDataset:
    return load_veri_layout(Path(root) / "VeRi", "veri776")


def synth_veri(root: Path, generate: bool = True, **spec: int) -> ReIDDataset:
    """The procedurally generated VeRi of `data.synth` (`spec`), written on first use (see reid_kd.data.synth)."""
    folder = Path(root) / "synth_veri"  # read as it is without `generate` (what `reidkd data check` asks)
    folder = synth.ensure(folder, synth.SynthSpec(**spec)) if generate else folder
    return load_veri_layout(folder, "synth_veri")
