"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), sparse, so that it runs at MSMT17 size.

Defined as in the authors' code (zhunzhong07/person-re-ranking, `re_ranking`, which torchreid and
fast-reid reuse); the defaults k1 = 20, k2 = 6, lambda = 0.3 are the paper's. Over queries and gallery
together, with d the squared Euclidean distance (of L2-normalised features under `cosine`):

    d'(i, j) = d(i, j) / max_m d(i, m)          each row scaled by its farthest item
    R(i)     = the j among i's k1+1 nearest that have i among their own k1+1 nearest
    R*(i)    = R(i) joined with R_half(c) (k1/2 rounded) of each c in R(i) sharing over 2/3 of it with R(i)
    V(i, .)  = exp(-d'(i, j)) on R*(i), normalised to sum 1, then averaged over i's k2 nearest
    J(q, g)  = 1 - m / (2 - m),  m = sum over l of min(V(q, l), V(g, l))
    final    = (1 - lambda) J + lambda d'

The authors build several dense (queries + gallery)^2 matrices (8.8e9 entries at MSMT17). Here only
the nearest lists and each item's farthest distance (FAISS searches), V (sparse, about k1 * k2 entries
a row) and one block of queries' final distances at a time exist.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from reid_kd.evaluation.ranking import Workspace, block_rows
from reid_kd.evaluation.search import knn

ROWS = 4096  # items per step when building neighbourhoods
PAIRS = 1 << 22  # (item, item) entries per step when gathering distances and Jaccard overlaps


def rerank_blocks(query: torch.Tensor, gallery: torch.Tensor, metric: str, max_rows: int, workspace: Workspace,
                  use_gpu: bool = True, k1: int = 20, k2: int = 6, lam: float = 0.3
                  ) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (query rows, minus the re-ranked distance to every gallery item), like `score_blocks`."""
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"unknown metric {metric!r}; use 'cosine' or 'euclidean'")
    n_query = len(query)
    feats = np.concatenate([query.cpu().numpy(), gallery.cpu().numpy()]).astype(np.float32, copy=False)
    if metric == "cosine":
        feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)  # in place: one copy at MSMT17 size
    sq = np.einsum("ij,ij->i", feats, feats)
    _, nearest = knn(feats, feats, k1 + 1, use_gpu=use_gpu)
    farthest = _farthest(feats, sq, use_gpu)
    v = _weights(feats, sq, farthest, nearest, k1)
    v = _query_expansion(v, nearest[:, :k2])
    overlap = _Overlap(v, n_query)

    fq, fg = torch.from_numpy(feats[:n_query]), torch.from_numpy(feats[n_query:])
    sq_q, sq_g = torch.from_numpy(sq[:n_query]), torch.from_numpy(sq[n_query:])
    far_q = torch.from_numpy(farthest[:n_query])
    rows = block_rows(len(fg), max_rows)
    for start in range(0, n_query, rows):
        block = slice(start, min(start + rows, n_query))
        scores = workspace.get("scores", (block.stop - start, len(fg)), torch.float32, fq.device)
        torch.mm(fq[block], fg.T, out=scores)  # becomes lambda * d'
        scores.mul_(-2).add_(sq_q[block, None]).add_(sq_g).clamp_(min=0).div_(far_q[block, None]).mul_(lam)
        m = overlap.block(block, workspace)
        ratio = m.div_(2 - m)  # 1 - J
        scores.add_(1 - lam).sub_(ratio, alpha=1 - lam).neg_()
        yield block, scores.to(query.device)


def _farthest(feats: np.ndarray, sq: np.ndarray, use_gpu: bool) -> np.ndarray:
    """max over m of d(i, m) for every item: one inner-product search, |x_i|^2 + max_m (|x_m|^2 - 2 x_i.x_m)."""
    base = np.concatenate([feats, sq[:, None]], 1)
    out = np.empty(len(feats), np.float32)
    for start in range(0, len(feats), ROWS):
        part = slice(start, start + ROWS)
        probe = np.concatenate([-2 * feats[part], np.ones((len(feats[part]), 1), np.float32)], 1)
        best, _ = knn(probe, base, 1, inner_product=True, use_gpu=use_gpu)
        out[part] = sq[part] + best[:, 0]
    return np.maximum(out, 1e-12)  # every item identical: d' = 0 / tiny = 0


def _reciprocal(nearest: np.ndarray) -> np.ndarray:
    """(N, k) mask: nearest[i, a] has i among its own k nearest."""
    mask = np.empty(nearest.shape, bool)
    for start in range(0, len(nearest), ROWS):
        part = slice(start, start + ROWS)
        back = nearest[nearest[part]]  # (rows, k, k)
        mask[part] = (back == np.arange(start, start + len(back))[:, None, None]).any(-1)
    return mask


def _expanded_sets(nearest: np.ndarray, k1: int) -> np.ndarray:
    """R*(i) of every item as a padded (N, w) array of item ids, -1 for an empty slot; rows may repeat ids."""
    near = nearest[:, :k1 + 1]
    recip = _reciprocal(near)
    half = nearest[:, :int(np.around(k1 / 2)) + 1]
    recip_half = _reciprocal(half)
    k, h = near.shape[1], half.shape[1]
    sets = np.full((len(near), k + k * h), -1, dtype=np.int64)
    for start in range(0, len(near), ROWS):
        part = slice(start, start + ROWS)
        members = np.where(recip[part], near[part], -1)  # R(i)
        cand = half[near[part]]  # R_half of each of i's nearest, before its reciprocity check
        cand_ok = recip_half[near[part]]
        inside = (cand[..., None] == members[:, None, None, :]).any(-1) & cand_ok
        joins = recip[part] & (inside.sum(-1) > 2.0 / 3 * cand_ok.sum(-1))
        joined = np.where(joins[..., None] & cand_ok, cand, -1).reshape(len(members), -1)
        sets[part] = np.concatenate([members, joined], 1)
    return sets


def _weights(feats, sq, farthest, nearest, k1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """V before query expansion, as CSR (indptr, indices, data): exp(-d') on R*(i), each row summing to 1."""
    sets = np.sort(_expanded_sets(nearest, k1), 1)
    keep = sets >= 0
    keep[:, 1:] &= sets[:, 1:] != sets[:, :-1]
    rows, slots = np.nonzero(keep)
    cols = sets[rows, slots]
    dist = np.empty(len(rows), np.float32)
    step = max(1, PAIRS // feats.shape[1])
    for start in range(0, len(rows), step):
        part = slice(start, start + step)
        dots = np.einsum("ij,ij->i", feats[rows[part]], feats[cols[part]])
        dist[part] = np.maximum(sq[rows[part]] + sq[cols[part]] - 2 * dots, 0)
    weight = np.exp(-dist / farthest[rows])
    weight /= np.bincount(rows, weights=weight, minlength=len(feats))[rows]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(feats)))])
    return indptr, cols, weight.astype(np.float32)


def _query_expansion(v, neighbours: np.ndarray):
    """Each row of V replaced by the mean of its item's nearest rows (CSR in, CSR out)."""
    indptr, indices, data = v
    n, k = neighbours.shape
    pair, source = _expand_ranges(indptr[neighbours.ravel()], (indptr[1:] - indptr[:-1])[neighbours].ravel())
    rows = pair // k
    key = rows * n + indices[source]
    order = np.argsort(key, kind="stable")
    key = key[order]
    starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    summed = np.add.reduceat(data[source][order], starts) / k if len(starts) else np.zeros(0, np.float32)
    out_rows = key[starts] // n
    out_indptr = np.concatenate([[0], np.cumsum(np.bincount(out_rows, minlength=n))])
    return out_indptr, key[starts] % n, summed.astype(np.float32)


def _expand_ranges(first: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, index): every index of the ranges [first[i], first[i] + counts[i]), with its range i."""
    owner = np.repeat(np.arange(len(counts)), counts)
    return owner, first[owner] + np.arange(len(owner)) - (np.cumsum(counts) - counts)[owner]


class _Overlap:
    """m(q, g) = sum over l of min(V(q, l), V(g, l)), one block of queries at a time."""

    def __init__(self, v, n_query: int):
        indptr, indices, data = v
        self.indptr, self.indices, self.data = indptr, indices, data
        gallery_rows = np.repeat(np.arange(len(indptr) - 1), indptr[1:] - indptr[:-1])[indptr[n_query]:]
        by_col = np.argsort(indices[indptr[n_query]:], kind="stable")
        cols = indices[indptr[n_query]:][by_col]
        self.col_ptr = np.searchsorted(cols, np.arange(len(indptr)))  # column l's gallery entries: [ptr[l], ptr[l+1])
        self.col_rows = gallery_rows[by_col] - n_query
        self.col_vals = data[indptr[n_query]:][by_col]
        self.n_gallery = len(indptr) - 1 - n_query

    def block(self, queries: slice, workspace: Workspace) -> torch.Tensor:
        out = workspace.get("overlap", (queries.stop - queries.start, self.n_gallery), torch.float32,
                            torch.device("cpu"))
        out.zero_()
        flat = out.view(-1)
        lo, hi = self.indptr[queries.start], self.indptr[queries.stop]
        q_rows = np.repeat(np.arange(queries.stop - queries.start),
                           np.diff(self.indptr[queries.start:queries.stop + 1]))
        q_cols, q_vals = self.indices[lo:hi], self.data[lo:hi]
        lengths = self.col_ptr[q_cols + 1] - self.col_ptr[q_cols]
        ends = np.cumsum(lengths)
        start = 0
        while start < len(q_cols):  # entries whose pairs fit in PAIRS
            stop = max(start + 1, int(np.searchsorted(ends, (ends[start - 1] if start else 0) + PAIRS, "right")))
            entry, source = _expand_ranges(self.col_ptr[q_cols[start:stop]], lengths[start:stop])
            entry += start
            index = q_rows[entry] * self.n_gallery + self.col_rows[source]
            value = np.minimum(q_vals[entry], self.col_vals[source])
            flat.index_add_(0, torch.from_numpy(index), torch.from_numpy(value))
            start = stop
        return out
