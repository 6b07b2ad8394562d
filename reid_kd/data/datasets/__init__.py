"""Dataset loaders, one module per family; their registry: `reid_kd/data/catalog.py`."""
from reid_kd.data.catalog import DATASETS, dataset_options
from reid_kd.data.datasets.base import ReIDDataset


def build_dataset(name: str, root, generate: bool = True, **options) -> ReIDDataset:
    """Dataset `name` read from `root` by its registered loader (imported now), given its entry's options
    (`catalog.dataset_options`); `generate=False` reads a generated dataset as it is on disk, writing nothing."""
    entry = DATASETS[name]
    extra = {"generate": generate} if entry.info.get("generated") else {}
    return entry(root, **dataset_options(name, options), **extra)
