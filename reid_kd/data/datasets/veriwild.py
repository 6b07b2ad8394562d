"""VeRi-Wild (Lou et al., CVPR 2019): 40671 vehicles, 174 cameras.

Layout: `<root>/VERI-Wild/` holding `images/VVVVV/IIIIII.jpg` and `train_test_split/` with
`train_list.txt`, `test_{3000,5000,10000}_query.txt` and `test_{3000,5000,10000}.txt` (gallery),
whose lines are `VVVVV/IIIIII` (vehicle id / image id), and `vehicle_info.txt`.

Quirk: cameras are not in the file names but in `vehicle_info.txt`, whose lines are
`VVVVV/IIIIII;camera;time;model;type;colour` after a header line. Camera numbers are mapped to
0-based ids in sorted order. Images absent from the info file are skipped and counted as bad.
`data.veriwild.test_size` picks the small (3000), medium (5000) or large (10000) test set.
"""
from __future__ import annotations

from pathlib import Path

from reid_kd.data.datasets.base import DatasetLayoutError, Item, ReIDDataset, relabel, require_dirs

FOLDER_NAMES = ("VERI-Wild", "VeRi-Wild", "veriwild")
LAYOUT = ("images/VVVVV/IIIIII.jpg and train_test_split/ with train_list.txt, test_N_query.txt, test_N.txt, "
          "vehicle_info.txt")


def _required(path: Path) -> Path:
    if not path.is_file():
        raise DatasetLayoutError(f"veriwild: list file not found: {path} (expected layout: {LAYOUT})")
    return path


def read_vehicle_info(path: Path) -> dict[str, int]:
    """'VVVVV/IIIIII' -> 0-based camera id, from `vehicle_info.txt` (header line skipped)."""
    raw: dict[str, str] = {}
    for line in _required(path).read_text().splitlines():
        fields = line.strip().split(";")
        if len(fields) < 2 or not fields[1].strip().isdigit():
            continue  # the header line ('id/image;Camera ID;...') and blank lines
        raw[fields[0].strip()] = fields[1].strip()
    cams = {c: i for i, c in enumerate(sorted(set(raw.values()), key=int))}
    return {key: cams[c] for key, c in raw.items()}


def _read_list(root: Path, listing: Path, cameras: dict[str, int], bad: list[str]) -> list[Item]:
    items = []
    for line in _required(listing).read_text().splitlines():
        key = line.strip().split()[0] if line.strip() else ""
        if not key:
            continue
        vid = key.split("/")[0]
        if "/" not in key or not vid.isdigit() or key not in cameras:
            bad.append(f"{listing.name}: {line.strip()}" + ("" if "/" not in key or not vid.isdigit()
                                                            else " (not in vehicle_info.txt)"))
            continue
        items.append(Item(str(root / "images" / f"{key}.jpg"), int(vid), cameras[key]))
    return items


def veriwild(root: Path, test_size: int) -> ReIDDataset:
    root = Path(root)
    folder = next((root / n for n in FOLDER_NAMES if (root / n).is_dir()), root / FOLDER_NAMES[0])
    require_dirs(folder, "veriwild", LAYOUT, "images", "train_test_split")
    split = folder / "train_test_split"
    cameras = read_vehicle_info(split / "vehicle_info.txt")
    bad: list[str] = []
    return ReIDDataset(
        name="veriwild",
        train=relabel(_read_list(folder, split / "train_list.txt", cameras, bad)),
        query=_read_list(folder, split / f"test_{test_size}_query.txt", cameras, bad),
        gallery=_read_list(folder, split / f"test_{test_size}.txt", cameras, bad),
        root=folder,
        notes={"test_size": str(test_size)},
        bad_files=bad,
    )
