"""CUHK03 (Li et al., CVPR 2014) under the new protocol (Zhong et al., CVPR 2017): 767 / 700 persons.

Layout: `<root>/cuhk03/` holding `images_labeled/` and `images_detected/` (the frames of
`cuhk-03.mat` written as PNG files named `P_III_V_NN.png`: camera pair, person, view 1 or 2, image)
and the split files `cuhk03_new_protocol_config_labeled.mat` and
`cuhk03_new_protocol_config_detected.mat`. Each .mat holds `filelist` (file names), `labels`
(identities) and 1-based `train_idx`, `query_idx`, `gallery_idx` into them.

Quirks: manually labelled and detector boxes are two variants of the same images with their own
split file (`data.cuhk03.variant`); the split is defined by the .mat indices only (the old 20
random splits of 1367/100 are not supported). The camera is the view in the file name (0 or 1 after
making it 0-based); a person is seen by one camera pair only, so the view separates cameras.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from reid_kd.data.datasets.base import DatasetLayoutError, Item, ReIDDataset, relabel, require_dirs

FOLDER_NAMES = ("cuhk03", "CUHK03", "cuhk03_release")
NAME = re.compile(r"^\d+_\d+_(\d)_\d+\.(png|jpg)$")


def _layout(variant: str) -> str:
    return f"images_{variant}/ holding P_III_V_NN.png files and cuhk03_new_protocol_config_{variant}.mat"


def _indices(split: dict, key: str) -> np.ndarray:
    return np.asarray(split[key]).astype(np.int64).ravel() - 1  # MATLAB indices are 1-based


def cuhk03(root: Path, variant: str) -> ReIDDataset:
    from scipy.io import loadmat

    root = Path(root)
    folder = next((root / n for n in FOLDER_NAMES if (root / n).is_dir()), root / FOLDER_NAMES[0])
    image_dir = f"images_{variant}"
    require_dirs(folder, "cuhk03", _layout(variant), image_dir)
    mat = folder / f"cuhk03_new_protocol_config_{variant}.mat"
    if not mat.is_file():
        raise DatasetLayoutError(f"cuhk03: split file not found: {mat} (expected layout: {_layout(variant)})")
    split = loadmat(str(mat))
    names = [str(np.asarray(n).ravel()[0]) for n in np.asarray(split["filelist"]).ravel()]
    labels = np.asarray(split["labels"]).astype(np.int64).ravel()
    bad: list[str] = []

    def take(key: str) -> list[Item]:
        items = []
        for i in _indices(split, key):
            m = NAME.match(names[i])
            if m is None:
                bad.append(f"{mat.name}: {names[i]}")
                continue
            items.append(Item(str(folder / image_dir / names[i]), int(labels[i]), int(m.group(1)) - 1))
        return items

    return ReIDDataset(
        name="cuhk03",
        train=relabel(take("train_idx")),
        query=take("query_idx"),
        gallery=take("gallery_idx"),
        root=folder,
        notes={"variant": variant},
        bad_files=bad,
    )
