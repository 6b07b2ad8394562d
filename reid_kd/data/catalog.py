"""The dataset registry: every loader's name, readable without OpenCV or torch.

A loader is `fn(root: Path, **options) -> ReIDDataset` in `data/datasets/<family>.py`, imported when a
run reads the data; the options it reads are `data.*` keys of the config schema.
"""
from reid_kd.registry import Registry

DATASETS = Registry("dataset")
_ = "reid_kd.data.datasets."
DATASETS.add("market1501", _ + "market:market1501", "Market-1501 (Zheng et al., ICCV 2015): 1501 persons, 6 cameras")
DATASETS.add("synth_market", _ + "market:synth_market", "synthetic persons in the Market-1501 layout")
DATASETS.add("dukemtmcreid", _ + "duke:dukemtmcreid", "DukeMTMC-reID (Zheng et al., ICCV 2017): 1404 persons")
DATASETS.add("msmt17", _ + "msmt17:msmt17", "MSMT17 (Wei et al., CVPR 2018): 4101 persons, 15 cameras")
DATASETS.add("cuhk03", _ + "cuhk03:cuhk03", "CUHK03 (Li et al., CVPR 2014), new protocol: 767 / 700 persons")
DATASETS.add("veri776", _ + "veri:veri776", "VeRi-776 (Liu et al., ICME 2016): 776 vehicles, 20 cameras")
DATASETS.add("synth_veri", _ + "veri:synth_veri", "synthetic vehicles in the VeRi-776 layout")
DATASETS.add("veriwild", _ + "veriwild:veriwild", "VeRi-Wild (Lou et al., CVPR 2019): 40671 vehicles, 174 cameras")
DATASETS.add("vehicleid", _ + "vehicleid:vehicleid", "VehicleID (Liu et al., CVPR 2016): 26267 vehicles, no cameras")
DATASETS.add("custom_csv", _ + "custom:custom_csv", "your data: a CSV file of path, identity, camera, split")
DATASETS.add("custom_folder", _ + "custom:custom_folder", "your data: a folder per split and identity")
