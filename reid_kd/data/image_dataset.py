"""Images on disk -> tensors, plus the train and test DataLoaders of one experiment."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from reid_kd.data.catalog import config_options
from reid_kd.data.datasets import build_dataset
from reid_kd.data.datasets.base import Item, ReIDDataset, combine_train
from reid_kd.data.sampler import PKBatchSampler
from reid_kd.data.transforms import build_transform
from reid_kd.data.validation import validation_split
from reid_kd.errors import UserError
from reid_kd.utils import distributed


class ImageReadError(UserError, OSError):
    """An image that is missing or cannot be decoded, met during training or evaluation."""


def read_image(path: str) -> np.ndarray:
    """An RGB image; only a regular file is opened (a FIFO or a device would block or never end)."""
    img = cv2.imread(path, cv2.IMREAD_COLOR) if Path(path).is_file() else None
    if img is None:
        why = "is missing or not a regular file" if not Path(path).is_file() else "cannot be decoded"
        raise ImageReadError(f"image {path} {why}; `reidkd data check DATASET --root ROOT` lists every bad file")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class ImageDataset(Dataset):
    """Items read with OpenCV and augmented with albumentations; returns (image, pid, camid, index).

    With `cache` the decoded images stay in memory: small datasets are then bound by compute,
    not by JPEG decoding, which matters on a 2-core machine.
    """

    def __init__(self, items: list[Item], transform, cache: bool = False, source: ReIDDataset | None = None):
        self.items, self.transform = items, transform
        self.source = source  # the dataset the items come from: evaluation reads its protocol flags
        self._cache: dict[int, np.ndarray] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.items)

    def _image(self, index: int) -> np.ndarray:
        if self._cache is None:
            return read_image(self.items[index].path)
        if index not in self._cache:
            self._cache[index] = read_image(self.items[index].path)
        return self._cache[index]

    def __getitem__(self, index: int):
        item = self.items[index]
        image = self.transform(image=self._image(index))["image"]
        return image, item.pid, item.camid, index


def load_dataset(data_cfg: dict) -> ReIDDataset:
    """`data.dataset`, its train split joined by those of `data.train_datasets` when listed.

    Evaluation stays on `data.dataset`'s query and gallery, or, with `data.validation_fraction`,
    on identities held out of the train split (the test split is then dropped).
    """
    def read(name: str) -> ReIDDataset:
        return build_dataset(name, Path(data_cfg["root"]), **config_options(data_cfg, name))

    dataset = read(data_cfg["dataset"])
    if data_cfg["train_datasets"]:
        extra = [read(name) for name in data_cfg["train_datasets"]]
        dataset = replace(dataset, name="+".join(ds.name for ds in [dataset, *extra]),
                          train=combine_train([dataset, *extra]))
    if data_cfg["validation_fraction"] > 0:
        dataset = validation_split(dataset, data_cfg["validation_fraction"], data_cfg["validation_seed"])
    return dataset


@dataclass
class Loaders:
    dataset: ReIDDataset
    train: DataLoader
    query: DataLoader
    gallery: DataLoader


def _worker_seed(worker_id: int) -> None:
    """Each worker gets its own seeded augmentation stream (torch derives per-worker seeds)."""
    info = torch.utils.data.get_worker_info()
    info.dataset.transform.set_random_seed(info.seed % 2**32)


def train_targets(loaders: Loaders) -> torch.Tensor:
    """The training label of every training image, by dataset index (per-sample distillers need it)."""
    return torch.tensor([item.pid for item in loaders.train.dataset.items], dtype=torch.long)


def build_loaders(data_cfg: dict, seed: int, dataset: ReIDDataset | None = None) -> Loaders:
    dataset = dataset or load_dataset(data_cfg)
    workers, cache = data_cfg["workers"], data_cfg["cache_images"] and data_cfg["workers"] == 0
    train_set = ImageDataset(dataset.train, build_transform(data_cfg, train=True, seed=seed), cache)
    sampler = PKBatchSampler([it.pid for it in dataset.train], data_cfg["batch_p"], data_cfg["batch_k"], seed,
                             distributed.rank(), distributed.world_size())
    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(train_set, batch_sampler=sampler, num_workers=workers, worker_init_fn=_worker_seed,
                       generator=generator, persistent_workers=workers > 0)

    def test_loader(items: list[Item]) -> DataLoader:
        return DataLoader(ImageDataset(items, build_transform(data_cfg, train=False), source=dataset),
                          batch_size=data_cfg["test_batch_size"], shuffle=False, num_workers=workers)

    return Loaders(dataset, train, test_loader(dataset.query), test_loader(dataset.gallery))
