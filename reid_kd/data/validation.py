"""A validation split carved from the training identities, for choosing options without the test split.

A seeded subset of the train identities is held out: those identities leave the train split, and
their images become the query and gallery, one query per (identity, camera) as VeRi-776 and
Market-1501 pick theirs, every other image in the gallery. The test query and gallery are dropped
from the dataset altogether, so nothing trained or scored under `data.validation_fraction > 0`
(`reidkd tune`) reads them.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import numpy as np

from reid_kd.data.datasets.base import Item, ReIDDataset, relabel
from reid_kd.errors import ConfigError

MIN_IDS = 2  # a validation gallery needs distractors


def held_out_ids(dataset: ReIDDataset, fraction: float, seed: int) -> list[int]:
    """The train identities held out (a seeded draw of round(fraction × ids))."""
    ids = sorted({it.pid for it in dataset.train})
    n = max(MIN_IDS, round(fraction * len(ids)))
    if n >= len(ids) - 1:
        raise ConfigError(f"config key 'data.validation_fraction' ({fraction}) holds out {n} of the {len(ids)} "
                          "training identities, leaving too few to train on; lower it")
    rng = np.random.default_rng([seed, 7])
    return sorted(rng.choice(ids, size=n, replace=False).tolist())


def validation_split(dataset: ReIDDataset, fraction: float, seed: int) -> ReIDDataset:
    """`dataset` with the held-out train identities as query and gallery and the rest as train."""
    held = set(held_out_ids(dataset, fraction, seed))
    train = relabel([it for it in dataset.train if it.pid not in held])
    by_view: dict[tuple[int, int], list[Item]] = defaultdict(list)
    for it in sorted((it for it in dataset.train if it.pid in held), key=lambda it: it.path):
        by_view[(it.pid, it.camid if dataset.has_cameras else 0)].append(it)
    query = [items[0] for items in by_view.values()]
    queried = {it.path for it in query}
    gallery = [it for items in by_view.values() for it in items if it.path not in queried]
    return replace(dataset, name=f"{dataset.name}:val", train=train, query=query, gallery=gallery, draws=None,
                   notes={**dataset.notes, "validation": f"{len(held)} training identities held out "
                                                         f"(fraction {fraction}, seed {seed})"})
