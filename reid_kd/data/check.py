"""`reidkd data check`: load a dataset, print its table beside the official counts, name what is wrong.

What counts as wrong (each reported on one line, and the exit status is then non-zero): a missing
folder or list file, files whose names do not follow the dataset's pattern (with examples), query
identities absent from the gallery, images that are missing or cannot be decoded. Counts that differ
from the official ones are shown in the table but are not an error by themselves (a subset of a
dataset, or custom data, is legitimate); a wrong count usually comes with one of the problems above.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2

from reid_kd.data.catalog import dataset_options
from reid_kd.data.datasets import build_dataset
from reid_kd.data.datasets.base import DatasetLayoutError, ReIDDataset

SPLITS = ("train", "query", "gallery")
EXAMPLES = 3

# Official (images, identities) per split, as the loaders read them (Market's junk -1 dropped).
OFFICIAL: dict[str, dict[str, tuple[int, int | None]]] = {
    "veri776": {"train": (37778, 576), "query": (1678, 200), "gallery": (11579, 200)},
    "market1501": {"train": (12936, 751), "query": (3368, 750), "gallery": (15913, 751)},
    "dukemtmcreid": {"train": (16522, 702), "query": (2228, 702), "gallery": (17661, 1110)},
    "msmt17": {"train": (32621, 1041), "query": (11659, 3060), "gallery": (82161, 3060)},
    "cuhk03:labeled": {"train": (7368, 767), "query": (1400, 700), "gallery": (5328, 700)},
    "cuhk03:detected": {"train": (7365, 767), "query": (1400, 700), "gallery": (5332, 700)},
    "veriwild:3000": {"train": (277797, 30671), "query": (3000, 3000), "gallery": (38861, 3000)},
    "veriwild:5000": {"train": (277797, 30671), "query": (5000, 5000), "gallery": (64389, 5000)},
    "veriwild:10000": {"train": (277797, 30671), "query": (10000, 10000), "gallery": (128517, 10000)},
    # VehicleID: one gallery image per identity, the rest of the test list are queries (per draw).
    "vehicleid:800": {"train": (113346, 13164), "query": (5693, None), "gallery": (800, 800)},
    "vehicleid:1600": {"train": (113346, 13164), "query": (11777, None), "gallery": (1600, 1600)},
    "vehicleid:2400": {"train": (113346, 13164), "query": (17377, None), "gallery": (2400, 2400)},
}


PICKS_THE_TABLE = {"cuhk03": "variant", "veriwild": "test_size", "vehicleid": "test_size"}  # dataset -> option


def official_counts(name: str, options: dict) -> dict[str, tuple[int, int | None]] | None:
    """The official table of a dataset under its options (all of them), or None (custom, synthetic)."""
    option = PICKS_THE_TABLE.get(name)
    return OFFICIAL.get(f"{name}:{options[option]}" if option else name)


@dataclass
class Report:
    name: str
    dataset: ReIDDataset | None
    table: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        lines = [self.table] if self.table else []
        lines += [f"problem: {p}" for p in self.problems]
        lines.append(f"{self.name}: OK" if self.ok else
                     f"{self.name}: {len(self.problems)} problem{'s' * (len(self.problems) != 1)}")
        return "\n".join(lines)


def _examples(values: list) -> str:
    shown = ", ".join(str(v) for v in values[:EXAMPLES])
    return shown + (", ..." if len(values) > EXAMPLES else "")


def table(dataset: ReIDDataset, official: dict[str, tuple[int, int | None]] | None) -> str:
    header = f"{'split':8} {'images':>8} {'ids':>7} {'cams':>5} {'official images':>16} {'official ids':>13}"
    lines = [f"{dataset.name} at {dataset.root}", header]
    for split in SPLITS:
        items = getattr(dataset, split)
        cams = str(len({i.camid for i in items})) if dataset.has_cameras else "-"
        off_images, off_ids = official[split] if official else (None, None)
        fmt = lambda v: "-" if v is None else str(v)  # noqa: E731
        mark = "  (differs)" if official and (off_images != len(items) or
                                             (off_ids is not None and off_ids != len({i.pid for i in items}))) else ""
        lines.append(f"{split:8} {len(items):8d} {len({i.pid for i in items}):7d} {cams:>5} "
                     f"{fmt(off_images):>16} {fmt(off_ids):>13}{mark}")
    if dataset.draws:
        lines.append(f"query and gallery: draw 1 of {len(dataset.draws)} seeded gallery draws "
                     "(evaluation averages them)")
    if not dataset.has_cameras:
        lines.append("no camera ids: evaluation keeps same-camera positives")
    return "\n".join(lines)


def jpeg_truncated(path: str) -> bool:
    """A JPEG file cut short: its last bytes (past any zero padding) are not the end-of-image marker.

    OpenCV decodes such a file with only a libjpeg warning, filling the missing rows.
    """
    if Path(path).suffix.lower() not in (".jpg", ".jpeg"):
        return False
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 64))
        tail = f.read().rstrip(b"\x00")
    return not tail.endswith(b"\xff\xd9")


def check_dataset(name: str, root: str | Path, options: dict | None = None, read_images: bool = True) -> Report:
    """Load `name` from `root` with its loader `options` (the others at their defaults) and list what is
    wrong with it."""
    options = dataset_options(name, options)
    try:
        dataset = build_dataset(name, Path(root), generate=False, **options)  # a check never writes
    except DatasetLayoutError as e:
        return Report(name, None, "", [f"missing: {e}"])
    report = Report(name, dataset, table(dataset, official_counts(name, options)))
    if dataset.bad_files:
        report.problems.append(f"{len(dataset.bad_files)} file(s) do not match the naming pattern, "
                               f"e.g. {_examples(dataset.bad_files)}")
    gallery_ids = {it.pid for it in dataset.gallery}
    orphans = sorted({it.pid for it in dataset.query} - gallery_ids)
    if orphans:
        report.problems.append(f"{len(orphans)} query identit{'ies' if len(orphans) != 1 else 'y'} absent from "
                               f"the gallery, e.g. {_examples(orphans)}")
    for split in SPLITS:
        if not getattr(dataset, split):
            report.problems.append(f"the {split} split is empty")
    if read_images:
        paths = sorted({it.path for split in SPLITS for it in getattr(dataset, split)})
        missing = [p for p in paths if not Path(p).is_file()]
        unreadable = [p for p in paths if Path(p).is_file() and cv2.imread(p, cv2.IMREAD_COLOR) is None]
        truncated = [p for p in paths if Path(p).is_file() and p not in unreadable and jpeg_truncated(p)]
        if missing:
            report.problems.append(f"{len(missing)} listed image(s) missing, e.g. {_examples(missing)}")
        if unreadable:
            report.problems.append(f"{len(unreadable)} image(s) cannot be decoded, e.g. {_examples(unreadable)}")
        if truncated:
            report.problems.append(f"{len(truncated)} JPEG(s) are truncated (no end-of-image marker; they decode "
                                   f"with grey or missing rows), e.g. {_examples(truncated)}")
    return report
