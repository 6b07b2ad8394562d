"""Retrieval metrics under the standard re-ID protocol: mAP, CMC and mINP, exact and vectorised.

Protocol: gallery items sharing the query's identity *and* camera are junk and removed; queries
left with no positive are skipped. mINP (Ye et al., 2021) is positives / rank of the last positive.
Datasets that record no camera (VehicleID, custom data) pass `same_camera_is_junk=False`: every
gallery item then counts, since their query and gallery are disjoint images and a shared dummy
camera would otherwise remove every positive.
"""
from __future__ import annotations

import numpy as np

from reid_kd.evaluation.search import ranked_chunks


def rank_metrics(matches: np.ndarray, keep: np.ndarray, max_rank: int):
    """Per-query AP, INP and first-hit rank from ranked match and keep masks (rows = queries)."""
    positives = matches & keep
    num_pos = positives.sum(1)
    rank_kept = np.cumsum(keep, 1)  # 1-based rank among kept items
    hits = np.cumsum(positives, 1)
    ap = np.where(positives, hits / np.maximum(rank_kept, 1), 0.0).sum(1) / np.maximum(num_pos, 1)
    pos_ranks = np.where(positives, rank_kept, np.iinfo(np.int64).max)
    first = pos_ranks.min(1)
    last = np.where(positives, rank_kept, 0).max(1)
    inp = num_pos / np.maximum(last, 1)
    valid = num_pos > 0
    cmc = (first[valid, None] <= np.arange(1, max_rank + 1)[None, :])
    return ap[valid], inp[valid], cmc, valid


def evaluate(qf, gf, q_pids, g_pids, q_camids, g_camids, metric: str = "cosine", max_rank: int = 50,
             query_chunk: int = 1024, use_gpu: bool = True, same_camera_is_junk: bool = True) -> dict:
    """mAP, mINP and CMC (length `max_rank`, CMC[k-1] = Rank-k) of query against gallery features.

    A gallery shorter than `max_rank` yields a CMC padded with its last value. With
    `same_camera_is_junk=False` the camera ids are ignored and no gallery item is removed.
    """
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    aps, inps, cmcs = [], [], []
    for rows, _, ranked in ranked_chunks(_numpy(qf), _numpy(gf), metric, query_chunk, use_gpu):
        pid_r, cam_r = g_pids[ranked], g_camids[ranked]
        same_id = pid_r == q_pids[rows, None]
        if same_camera_is_junk:
            keep = ~(same_id & (cam_r == q_camids[rows, None]))
        else:
            keep = np.ones_like(same_id)
        ap, inp, cmc, _ = rank_metrics(same_id, keep, max_rank)
        aps.append(ap), inps.append(inp), cmcs.append(cmc)
    ap, inp, cmc = np.concatenate(aps), np.concatenate(inps), np.concatenate(cmcs)
    if len(ap) == 0:
        raise ValueError("no query has a positive in the gallery" +
                         (" under another camera" if same_camera_is_junk else ""))
    return {"mAP": float(ap.mean()), "mINP": float(inp.mean()), "cmc": cmc.mean(0),
            "num_valid_queries": int(len(ap)), "num_queries": int(len(q_pids))}


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)
