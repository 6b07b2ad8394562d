"""MSMT17 (Wei et al., CVPR 2018): 4101 persons, 15 cameras; V1 and V2 (faces masked).

Layout: `<root>/MSMT17_V1/` holding `train/`, `test/` or `<root>/MSMT17_V2/` holding
`mask_train_v2/`, `mask_test_v2/`, each with `list_train.txt`, `list_val.txt`, `list_query.txt`,
`list_gallery.txt`. A list line is `PPPP/PPPP_SSS_CC_DDDDtime_FFFF_N.jpg ID` (relative path and
identity); the camera is the third field of the file name (1-based). The split is defined by the
list files only: train is list_train + list_val (the usual 1041 identities), query and gallery
come from the test folder. `data.msmt17.version` picks v1 or v2; `auto` takes V1 when present.
"""
from __future__ import annotations

import re
from pathlib import Path

from reid_kd.data.datasets.base import DatasetLayoutError, Item, ReIDDataset, relabel, require_dirs

VERSIONS = {  # version -> (folder names, train folder, test folder)
    "v1": (("MSMT17_V1", "MSMT17"), "train", "test"),
    "v2": (("MSMT17_V2", "MSMT17"), "mask_train_v2", "mask_test_v2"),
}
LISTS = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")
NAME = re.compile(r"^\d+_\d+_(\d+)_.+\.jpg$")


def _layout(version: str) -> str:
    _, train, test = VERSIONS[version]
    return f"{train}/, {test}/ and {', '.join(LISTS)} (lines 'PPPP/file.jpg ID')"


def _find(root: Path, version: str) -> tuple[Path, str]:
    """(dataset folder, version): the folder holding that version's train folder."""
    versions = ("v1", "v2") if version == "auto" else (version,)
    for v in versions:
        names, train, _ = VERSIONS[v]
        for name in names:
            if (root / name / train).is_dir():
                return root / name, v
    v = versions[0]
    return root / VERSIONS[v][0][0], v


def _read_list(folder: Path, listing: Path, bad: list[str]) -> list[Item]:
    items = []
    for line in listing.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        m = NAME.match(Path(parts[0]).name)
        if len(parts) != 2 or m is None or not parts[1].lstrip("-").isdigit():
            bad.append(f"{listing.name}: {line.strip()}")
            continue
        items.append(Item(str(folder / parts[0]), int(parts[1]), int(m.group(1)) - 1))
    return items


def msmt17(root: Path, version: str) -> ReIDDataset:
    folder, version = _find(Path(root), version)
    _, train_dir, test_dir = VERSIONS[version]
    require_dirs(folder, "msmt17", _layout(version), train_dir, test_dir)
    for listing in LISTS:
        if not (folder / listing).is_file():
            raise DatasetLayoutError(f"msmt17: list file not found: {folder / listing} "
                                     f"(expected layout: {_layout(version)})")
    bad: list[str] = []
    train = _read_list(folder / train_dir, folder / "list_train.txt", bad)
    train += _read_list(folder / train_dir, folder / "list_val.txt", bad)
    return ReIDDataset(
        name="msmt17",
        train=relabel(train),
        query=_read_list(folder / test_dir, folder / "list_query.txt", bad),
        gallery=_read_list(folder / test_dir, folder / "list_gallery.txt", bad),
        root=folder,
        notes={"version": version},
        bad_files=bad,
    )
