"""Dataset loaders, one module per family; their registry: `reid_kd/data/catalog.py`."""
from reid_kd.data.catalog import DATASETS
from reid_kd.data.datasets.base import ReIDDataset


def build_dataset(name: str, root, **options) -> ReIDDataset:
    """Dataset `name` read from `root` by its registered loader (imported now)."""
    return DATASETS[name](root, **options)
