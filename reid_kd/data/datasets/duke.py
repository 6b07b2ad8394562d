"""DukeMTMC-reID (Zheng et al., ICCV 2017; from Ristani et al., 2016): 1404 persons, 8 cameras.

Layout: `<root>/DukeMTMC-reID/` holding `bounding_box_train/`, `query/`, `bounding_box_test/`
(Market-1501's folders) with files `PPPP_cC_fFFFFFFF.jpg`. The gallery holds 408 distractor
identities that appear in one camera only; they are kept, as the official protocol does.
"""
from __future__ import annotations

import re
from pathlib import Path

from reid_kd.data.datasets.base import ReIDDataset
from reid_kd.data.datasets.market import find_folder, load_market_layout

LAYOUT = "bounding_box_train/, query/, bounding_box_test/ holding PPPP_cC_fFFFFFFF.jpg files"
PATTERN = re.compile(r"^(\d+)_c(\d+)_f\d+\.jpg$")
FOLDER_NAMES = ("DukeMTMC-reID", "dukemtmc-reid", "dukemtmcreid")


def dukemtmcreid(root: Path) -> ReIDDataset:
    return load_market_layout(find_folder(root, FOLDER_NAMES), "dukemtmcreid", PATTERN, LAYOUT)
