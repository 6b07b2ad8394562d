"""Retrieval metrics under the standard re-ID protocol: mAP, CMC and mINP, exact.

Protocol: gallery items sharing the query's identity *and* camera are junk and removed; queries
left with no positive are skipped. mINP (Ye et al., 2021) is positives / rank of the last positive.
Datasets that record no camera (VehicleID, custom data) pass `same_camera_is_junk=False`: every
gallery item then counts, since their query and gallery are disjoint images and a shared dummy
camera would otherwise remove every positive.

Ranks are counted block by block (`ranking.py`) on the features' device: a GPU evaluates any gallery
size exactly, a CPU in memory bounded by the block, and both give the same numbers as ranking every
row in full with ties broken by gallery order.
"""
from __future__ import annotations

import numpy as np
import torch

from reid_kd.evaluation.ranking import (Workspace, all_finite, as_features, positive_ranks, rank_summaries,
                                       same_id_pairs, score_blocks)
from reid_kd.evaluation.rerank import rerank_blocks


def evaluate(qf, gf, q_pids, g_pids, q_camids, g_camids, metric: str = "cosine", max_rank: int = 50,
             query_chunk: int = 1024, use_gpu: bool = True, same_camera_is_junk: bool = True,
             device: torch.device | str | None = None, rerank: dict | None = None) -> dict:
    """mAP, mINP and CMC (length `max_rank`, CMC[k-1] = Rank-k) of query against gallery features, and each
    query's AP (`query_ap`, NaN where the query has no positive and is skipped).

    Features may be NumPy arrays or tensors; scores are computed on `device` (default: where the
    features are). `query_chunk` caps the queries per block. `rerank` ({k1, k2, lam}) scores by
    k-reciprocal re-ranking instead (`rerank.py`): on the CPU, its neighbour searches through FAISS on
    the GPU when `use_gpu` and FAISS sees one. A gallery shorter than `max_rank` yields a CMC padded
    with its last value. With `same_camera_is_junk=False` the camera ids are ignored and no gallery
    item is removed.
    """
    query, gallery = as_features(qf, "cpu" if rerank else device), as_features(gf, "cpu" if rerank else device)
    if not (all_finite(query) and all_finite(gallery)):
        raise ValueError("the features hold NaN or infinite values; the model that produced them diverged")
    dev = query.device
    q_pids, g_pids = _labels(q_pids, dev), _labels(g_pids, dev)
    q_camids, g_camids = _labels(q_camids, dev), _labels(g_camids, dev)
    workspace = Workspace()
    if rerank is None:
        blocks = score_blocks(query, gallery, metric, query_chunk, workspace)
    else:
        blocks = rerank_blocks(query, gallery, metric, query_chunk, workspace, use_gpu=use_gpu, **rerank)
    g_sorted_pids, g_order = torch.sort(g_pids, stable=True)
    aps, inps, cmcs, valid = [], [], [], []
    for block, scores in blocks:
        rows, cols = same_id_pairs(q_pids[block], g_order, g_sorted_pids)
        if same_camera_is_junk:
            junk = q_camids[block][rows] == g_camids[cols]
            scores[rows[junk], cols[junk]] = float("-inf")
            rows, cols = rows[~junk], cols[~junk]
        ranks, counts = positive_ranks(scores, rows, cols, workspace)
        ap, inp, cmc = rank_summaries(ranks, counts, max_rank)
        aps.append(ap), inps.append(inp), cmcs.append(cmc), valid.append((counts > 0).cpu().numpy())
    ap, inp, cmc = np.concatenate(aps), np.concatenate(inps), np.concatenate(cmcs)
    if len(ap) == 0:
        raise ValueError("no query has a positive in the gallery" +
                         (" under another camera" if same_camera_is_junk else ""))
    query_ap = np.full(len(q_pids), np.nan)
    query_ap[np.concatenate(valid)] = ap
    return {"mAP": float(ap.mean()), "mINP": float(inp.mean()), "cmc": cmc.mean(0),
            "num_valid_queries": int(len(ap)), "num_queries": int(len(q_pids)), "query_ap": query_ap}


def _labels(x, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x, dtype=np.int64), device=device)
