"""P×K identity sampling: every batch holds P distinct identities with K images each.

Batch-hard triplet mining and relation-based distillation need several positives per identity in
a batch; this guarantees it. Identities with fewer than K images are sampled with replacement.
The order is a function of (seed, epoch), so a resumed run sees the same batches.

Under data-parallel training with N ranks, rank r yields identities r·P/N .. (r+1)·P/N − 1 of every
global batch (whole identities, K images each): the N shares together are exactly the batch one process
draws for the same seed, and each rank's batch-hard triplets find their positives at home.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from reid_kd.errors import ConfigError


class PKBatchSampler(Sampler[list[int]]):
    def __init__(self, pids: Sequence[int], p: int, k: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.p, self.k, self.seed, self.epoch = p, k, seed, 0
        if p % world_size:
            raise ConfigError(f"config key 'data.batch_p' is {p}, which {world_size} processes cannot share by whole "
                              f"identities; set data.batch_p to a multiple of {world_size}")
        self.rank, self.world_size = rank, world_size
        by_pid: dict[int, list[int]] = defaultdict(list)
        for index, pid in enumerate(pids):
            by_pid[int(pid)].append(index)
        self.by_pid = {pid: np.asarray(ix) for pid, ix in sorted(by_pid.items())}
        if len(self.by_pid) < p:
            raise ConfigError(f"config key 'data.batch_p' is {p}, but the train split has only {len(self.by_pid)} "
                              f"identities; set data.batch_p to at most {len(self.by_pid)}")
        # groups of K per identity, as many as its images fill (at least one)
        self._groups_per_pid = {pid: max(1, len(ix) // k) for pid, ix in self.by_pid.items()}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _groups(self, rng: np.random.Generator) -> dict[int, list[np.ndarray]]:
        groups = {}
        for pid, ix in self.by_pid.items():
            chosen = rng.permutation(ix) if len(ix) >= self.k else rng.choice(ix, size=self.k, replace=True)
            n = self._groups_per_pid[pid]
            groups[pid] = [chosen[g * self.k:(g + 1) * self.k] for g in range(n)]
        return groups

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        groups = self._groups(rng)
        available = [pid for pid in groups]
        while len(available) >= self.p:
            picked = rng.choice(len(available), size=self.p, replace=False)
            batch: list[int] = []
            for j in sorted(picked):
                batch.extend(int(i) for i in groups[available[j]].pop())
            available = [pid for pid in available if groups[pid]]
            share = len(batch) // self.world_size  # P/N identities of K images each
            yield batch[self.rank * share:(self.rank + 1) * share]

    def __len__(self) -> int:
        """Upper bound used for progress bars: all groups packed P at a time."""
        return sum(self._groups_per_pid.values()) // self.p
