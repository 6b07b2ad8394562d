"""The dataset registry: every loader's name and options, readable without OpenCV or torch.

A loader is `fn(root: Path, **options) -> ReIDDataset` in `data/datasets/<family>.py`, imported when a
run reads the data. It receives exactly the options its entry declares (defaults, choices, bounds and
where each default comes from), which a config holds in the dataset's block, `data.<dataset>.<option>`
(`config.dataset_block`), present and checked when the config uses the dataset. An entry of a
generated dataset says so (`generated=True`): its loader also takes `generate`.
"""
from __future__ import annotations

from typing import Any

from reid_kd.config import dataset_block
from reid_kd.registry import Registry
from reid_kd.schema import SYNTH, Choice, Num, Typed, validate

DATASETS = Registry("dataset")
_ = "reid_kd.data.datasets."

SYNTH_SOURCES = {**{key: "ours" for key in SYNTH}, "seed": "ours (pretrain.synth.seed must differ: other vehicles)"}
PATH_SOURCE = "yours: relative to data.root, or absolute"

DATASETS.add("market1501", _ + "market:market1501", "Market-1501 (Zheng et al., ICCV 2015): 1501 persons, 6 cameras")
DATASETS.add("synth_market", _ + "market:synth_market", "synthetic persons in the Market-1501 layout",
             options=SYNTH, sources=SYNTH_SOURCES, block="synth", generated=True)
DATASETS.add("dukemtmcreid", _ + "duke:dukemtmcreid", "DukeMTMC-reID (Zheng et al., ICCV 2017): 1404 persons")
DATASETS.add("msmt17", _ + "msmt17:msmt17", "MSMT17 (Wei et al., CVPR 2018): 4101 persons, 15 cameras",
             options={"version": Choice("auto", "v1", "v2")},
             sources={"version": "ours: V1 when present, else V2 (faces masked)"})
DATASETS.add("cuhk03", _ + "cuhk03:cuhk03", "CUHK03 (Li et al., CVPR 2014), new protocol: 767 / 700 persons",
             options={"variant": Choice("labeled", "detected")},
             sources={"variant": "ours: the hand-drawn boxes (Zhong et al., CVPR 2017 report both variants)"})
DATASETS.add("veri776", _ + "veri:veri776", "VeRi-776 (Liu et al., ICME 2016): 776 vehicles, 20 cameras")
DATASETS.add("synth_veri", _ + "veri:synth_veri", "synthetic vehicles in the VeRi-776 layout",
             options=SYNTH, sources=SYNTH_SOURCES, block="synth", generated=True)
DATASETS.add("veriwild", _ + "veriwild:veriwild", "VeRi-Wild (Lou et al., CVPR 2019): 40671 vehicles, 174 cameras",
             options={"test_size": Typed(int, 3000, optional=False, choices=(3000, 5000, 10000))},
             sources={"test_size": "paper (the small test set, reported first)"})
DATASETS.add("vehicleid", _ + "vehicleid:vehicleid", "VehicleID (Liu et al., CVPR 2016): 26267 vehicles, no cameras",
             options={"test_size": Typed(int, 800, optional=False, choices=(800, 1600, 2400, 13164)),
                      "draws": Num(10, 1, why="the figure is the mean over the draws"),
                      "draw_seed": Num(0, 0)},
             sources={"test_size": "paper (the small test set, reported first)",
                      "draws": "the usual protocol: one random gallery image per identity, the mean of 10 draws",
                      "draw_seed": "ours: draw i uses the seed (draw_seed, i)"})
DATASETS.add("custom_csv", _ + "custom:custom_csv", "your data: a CSV file of path, identity, camera, split",
             options={"path": Typed(str, None)}, sources={"path": PATH_SOURCE})
DATASETS.add("custom_folder", _ + "custom:custom_folder", "your data: a folder per split and identity",
             options={"path": Typed(str, None)}, sources={"path": PATH_SOURCE})


def dataset_options(name: str, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """Dataset `name`'s loader options: `given` checked against its entry's schema, the rest at their
    defaults (a config's block, already checked, comes back unchanged)."""
    entry = DATASETS[name]
    return validate(given or {}, entry.options, f"data.{dataset_block(entry)}.")


def config_options(data_cfg: dict[str, Any], name: str) -> dict[str, Any]:
    """Dataset `name`'s options as a checked config's `data` block holds them (none: no options)."""
    entry = DATASETS[name]
    return dict(data_cfg[dataset_block(entry)]) if entry.options else {}
