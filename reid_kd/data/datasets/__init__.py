"""Dataset loaders, one module per family; importing this package registers them all."""
from reid_kd.data.datasets import (  # noqa: F401  (registration side effects)
    cuhk03, custom, duke, market, msmt17, vehicleid, veri, veriwild,
)
from reid_kd.data.datasets.base import DATASETS, DatasetLayoutError, Item, ReIDDataset, register

__all__ = ["DATASETS", "DatasetLayoutError", "Item", "ReIDDataset", "register", "build_dataset"]


def build_dataset(name: str, root, **options) -> ReIDDataset:
    if name not in DATASETS:
        raise DatasetLayoutError(f"unknown dataset {name!r}; registered: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](root, **options)
