"""Exact rank of every positive by counting, block by block, on the features' device.

AP, mINP and CMC only need where each positive lands: one plus the number of kept gallery items
scoring above it, an equal score counting as above when the item comes earlier in the gallery (the
stable order every result here is defined by). So the scores of a block of queries against the whole
gallery are computed, each positive's rank is counted there, and the block is dropped: nothing larger
than a block is materialised, and no row is sorted.

Counting a row: its positives' score range is split into even buckets (a monotone map, so an item in a
higher bucket than a positive scores strictly above it); a histogram of the items' buckets counts
those, and only the few items sharing a positive's bucket are compared exactly, ties included.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

BLOCK_ELEMENTS = 1 << 24  # scores per block (queries x gallery); the working set is ~13 bytes per score
BUCKETS = 4096  # even splits of a row's positive-score range
PAIRS = 1 << 21  # (item, positive) exact comparisons at a time inside shared buckets


class Workspace:
    """Block-sized buffers reused from block to block: fresh pages for every block cost about as much
    as the counting itself on a CPU."""

    def __init__(self):
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        numel = shape[0] * shape[1]
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != dtype or buf.device != device:
            buf = self._buffers[name] = torch.empty(numel, dtype=dtype, device=device)
        return buf[:numel].view(shape)


def block_rows(n_gallery: int, max_rows: int) -> int:
    """Queries per block: BLOCK_ELEMENTS scores, and few enough that bucket keys stay exact in int32."""
    return max(1, min(max_rows, BLOCK_ELEMENTS // max(n_gallery, 1), (1 << 30) // (BUCKETS + 3)))


def score_blocks(query: torch.Tensor, gallery: torch.Tensor, metric: str, max_rows: int,
                 workspace: Workspace) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (query rows, scores) over the whole gallery, higher = better, in one reused buffer.

    `cosine`: similarity of L2-normalised features; `euclidean`: minus the squared distance. The
    gallery is never copied: cosine divides each score column by its gallery norm instead.
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"unknown metric {metric!r}; use 'cosine' or 'euclidean'")
    rows = block_rows(len(gallery), max_rows)
    if metric == "cosine":
        g_norm = gallery.norm(dim=1).clamp_min(1e-12)
    else:
        g_sq = (gallery * gallery).sum(1)
    for start in range(0, len(query), rows):
        block = slice(start, min(start + rows, len(query)))
        q = query[block]
        scores = workspace.get("scores", (len(q), len(gallery)), torch.float32, gallery.device)
        if metric == "cosine":
            q = q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)
            torch.mm(q, gallery.T, out=scores).div_(g_norm)
        else:  # 2 q.g - |q|^2 - |g|^2 = -|q - g|^2
            torch.mm(q, gallery.T, out=scores).mul_(2).sub_((q * q).sum(1, keepdim=True)).sub_(g_sq)
        yield block, scores


def positive_ranks(scores: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, workspace: Workspace
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(ranks, counts): the 1-based rank of each row's positives among its items, ascending, padded.

    `scores` (queries x gallery, higher = better) must already hold -inf for removed (junk) items;
    (`rows`, `cols`) are the positives, rows ascending. `ranks[i, :counts[i]]` are row i's ranks.
    """
    n_rows, n_items = scores.shape
    dev = scores.device
    counts = torch.bincount(rows, minlength=n_rows)
    pos_score = scores[rows, cols]
    lo = torch.zeros(n_rows, dtype=scores.dtype, device=dev).scatter_reduce_(0, rows, pos_score, "amin",
                                                                             include_self=False)
    hi = torch.zeros(n_rows, dtype=scores.dtype, device=dev).scatter_reduce_(0, rows, pos_score, "amax",
                                                                             include_self=False)
    # Bucket 0: below every positive; 1..n+1: [lo, hi] split evenly, lo and hi mid-bucket so that the
    # many items far below or above the positives rarely share their bucket; n+2: above them all.
    n = min(BUCKETS, n_items)
    width = n + 3
    scale = n / (hi - lo).clamp_min(1e-30)
    work = workspace.get("work", scores.shape, scores.dtype, dev)
    torch.sub(scores, lo[:, None], out=work).mul_(scale[:, None]).add_(1.5).clamp_(0, n + 2)  # exact near lo
    bucket = workspace.get("bucket", scores.shape, torch.int32, dev)
    bucket.copy_(work)  # truncation of values >= 0: the floor, a monotone map of the score
    bucket += torch.arange(0, n_rows * width, width, device=dev, dtype=torch.int32)[:, None]
    pos_key = bucket[rows, cols].long()
    occupied = torch.zeros(n_rows * width, dtype=torch.bool, device=dev)
    occupied[pos_key] = True
    shares = _lookup(occupied, bucket)
    close = _same_bucket_above(scores, bucket, shares, pos_key, pos_score, cols)
    at_or_below = torch.bincount(bucket.view(-1), minlength=n_rows * width).view(n_rows, width).cumsum(1)
    above = n_items - at_or_below.view(-1)[pos_key] + close

    slots = max(int(counts.max()), 1) if n_rows else 1
    slot = torch.arange(len(rows), device=dev) - (counts.cumsum(0) - counts)[rows]
    ranks = torch.full((n_rows, slots), n_items + 1, dtype=torch.long, device=dev)
    ranks[rows, slot] = above + 1
    return ranks.sort(1).values, counts


def _lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`table[index]`: NumPy's indexing on the CPU (several times faster than torch's there)."""
    if index.device.type == "cpu":
        return torch.from_numpy(table.numpy()[index.numpy()])
    return torch.take(table, index.long())


def _same_bucket_above(scores, bucket, shares, pos_key, pos_score, pos_col) -> torch.Tensor:
    """Per positive, the items in its bucket that rank above it: a higher score, or the same and earlier."""
    above = torch.zeros_like(pos_key)
    item_rows, item_cols = shares.nonzero(as_tuple=True)
    item_key = bucket[item_rows, item_cols].long()
    item_score = scores[item_rows, item_cols]
    order = pos_key.argsort()
    sorted_key = pos_key[order]
    first = torch.searchsorted(sorted_key, item_key)
    n_pos = torch.searchsorted(sorted_key, item_key, right=True) - first  # positives sharing the bucket
    step = max(1, PAIRS // max(int(n_pos.max()), 1)) if len(n_pos) else 1
    for start in range(0, len(item_key), step):
        part = slice(start, start + step)
        item, at = expand_ranges(first[part], n_pos[part])
        pos = order[at]
        s, c = item_score[part][item], item_cols[part][item]
        wins = (s > pos_score[pos]) | ((s == pos_score[pos]) & (c < pos_col[pos]))
        above.index_add_(0, pos, wins.long())
    return above


def same_id_pairs(q_pids: torch.Tensor, g_order: torch.Tensor, g_sorted_pids: torch.Tensor):
    """(rows, cols): every (query, gallery item) pair of one identity, rows ascending, without a
    queries x gallery comparison. `g_order` sorts the gallery by identity (stably)."""
    first = torch.searchsorted(g_sorted_pids, q_pids)
    rows, at = expand_ranges(first, torch.searchsorted(g_sorted_pids, q_pids, right=True) - first)
    return rows, g_order[at]


def expand_ranges(first: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(owner, index): every index of the ranges [first[i], first[i] + counts[i]), with its range i."""
    owner = torch.arange(len(counts), device=counts.device).repeat_interleave(counts)
    return owner, first[owner] + torch.arange(len(owner), device=counts.device) - (counts.cumsum(0) - counts)[owner]


def rank_summaries(ranks: torch.Tensor, counts: torch.Tensor, max_rank: int):
    """Per query with a positive: AP, INP and CMC row (NumPy), from `positive_ranks`'s output."""
    valid = counts > 0
    ranks, counts = ranks[valid].double(), counts[valid]
    k = torch.arange(1, ranks.shape[1] + 1, device=ranks.device, dtype=torch.float64)
    counted = k[None, :] <= counts[:, None]
    ap = torch.where(counted, k / ranks, 0.0).sum(1) / counts
    last = ranks.gather(1, (counts - 1)[:, None]).squeeze(1)
    inp = counts / last
    cmc = ranks[:, :1] <= torch.arange(1, max_rank + 1, device=ranks.device)[None, :]
    return ap.cpu().numpy(), inp.cpu().numpy(), cmc.cpu().numpy()


def as_features(x, device: torch.device | str | None) -> torch.Tensor:
    """Float32 features on `device` (None: where they are), without a copy when they already are."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        return x.to(torch.device(device) if device is not None else x.device, torch.float32)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device or "cpu")


def all_finite(x: torch.Tensor) -> bool:
    """One read of `x`: a NaN or infinity anywhere makes its row sum non-finite."""
    return bool(torch.isfinite(x.sum(1)).all())
