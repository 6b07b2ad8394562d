"""`reidkd index eval`: what an index costs in accuracy and gains in speed, on a config's query split.

Accuracy is scored on the ranked lists the index itself returns (to `depth`, default the whole gallery),
under the standard protocol (same identity and camera is junk). A positive the index does not return
counts as never found: it adds nothing to AP, and the query's INP is 0. For a `Flat` index at full depth
these are the exact metrics `reidkd eval` gives. Recall@k is the share of each query's exact k nearest
gallery items (brute force over the exact features) that the index returns in its top k; queries/s time
the index's top-k search of all queries beside the same search done exactly (FAISS brute force).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from reid_kd.deploy.index import GalleryIndex, extract, items_from_config
from reid_kd.errors import UserError
from reid_kd.evaluation.ranking import rank_summaries
from reid_kd.evaluation.search import knn


def ranked_list_metrics(ranked: np.ndarray, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50,
                        same_camera_is_junk: bool = True) -> dict:
    """mAP, mINP and CMC from each query's ranked gallery rows (-1: nothing there), as `evaluate` reports them."""
    q_pids, q_camids = np.asarray(q_pids), np.asarray(q_camids)
    g_pids, g_camids = np.asarray(g_pids), np.asarray(g_camids)
    valid = ranked >= 0
    rows = np.where(valid, ranked, 0)
    same = valid & (g_pids[rows] == q_pids[:, None])
    junk = same & (g_camids[rows] == q_camids[:, None]) if same_camera_is_junk else np.zeros_like(same)
    kept, positive = valid & ~junk, same & ~junk
    rank = np.cumsum(kept, axis=1)  # 1-based rank of each kept item among the kept ones
    # every positive of the query in the gallery, found or not: those not found keep an infinite rank
    totals = _positives_per_query(q_pids, q_camids, g_pids, g_camids, same_camera_is_junk)
    ranks = np.full((len(ranked), max(int(totals.max(initial=0)), 1)), np.inf)
    r, c = np.nonzero(positive)
    ranks[r, np.cumsum(positive, axis=1)[r, c] - 1] = rank[r, c]
    ap, inp, cmc = rank_summaries(torch.from_numpy(ranks), torch.from_numpy(totals), max_rank)
    if len(ap) == 0:
        raise UserError("no query has a positive in the index's gallery; index eval needs the gallery of the "
                        "config's query split (`reidkd index build --config F --split gallery`)")
    return {"mAP": float(ap.mean()), "mINP": float(inp.mean()), "cmc": cmc.mean(0),
            "num_valid_queries": int(len(ap)), "num_queries": int(len(q_pids))}


def _positives_per_query(q_pids, q_camids, g_pids, g_camids, same_camera_is_junk: bool) -> np.ndarray:
    ids, counts = np.unique(g_pids, return_counts=True)
    pos = np.where(np.isin(q_pids, ids), counts[np.clip(np.searchsorted(ids, q_pids), 0, len(ids) - 1)], 0)
    if same_camera_is_junk:
        pairs, pair_counts = np.unique(np.stack([g_pids, g_camids], 1), axis=0, return_counts=True)
        lookup = {(int(p), int(c)): int(n) for (p, c), n in zip(pairs, pair_counts)}
        pos = pos - np.array([lookup.get((int(p), int(c)), 0) for p, c in zip(q_pids, q_camids)], dtype=pos.dtype)
    return pos.astype(np.int64)


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top-k rows among the rows the index returned."""
    k = exact.shape[1]
    return float(np.mean([len(np.intersect1d(f[f >= 0], e)) / k for f, e in zip(found, exact)]))


def queries_per_second(search, queries: np.ndarray, repeats: int = 3) -> float:
    """Best of `repeats` timings of one batched search of all queries."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        search(queries)
        best = min(best, time.perf_counter() - start)
    return len(queries) / best


def evaluate_index(gallery: GalleryIndex, cfg: dict, depth: int | None = None, k: int = 10,
                   checkpoint: str | None = None, device: torch.device | str = "cpu", batch_size: int = 256,
                   query_checkpoint: str | None = None) -> dict:
    """Metrics of the index's ranking of the config's queries, recall@k against exact search, and speeds.

    The queries are embedded by the index's model, or by `query_checkpoint`, a student distilled from it
    (`GalleryIndex.query_model`): the asymmetric protocol, scored as `reidkd eval` scores it."""
    if cfg["eval"]["rerank"]:
        raise UserError("index eval scores the index's own ranking; run it without eval.rerank "
                        "(--set eval.rerank=false)")
    labels = gallery.items
    if (labels["pid"] < 0).any():
        raise UserError(f"the index {gallery.folder} has images of unknown identity (names not like 0002_c003_...); "
                        "index eval needs a labelled gallery: build it with --config F --split gallery")
    model = gallery.query_encoder(checkpoint, query_checkpoint, device)
    query, has_cameras = items_from_config(cfg, "query")
    qf = extract(model, query, torch.device(device), batch_size, progress="query features")
    depth = gallery.index.ntotal if depth is None else min(depth, gallery.index.ntotal)
    _, ranked = gallery.search(qf, depth)
    metrics = ranked_list_metrics(ranked, [it.pid for it in query], labels["pid"].to_numpy(),
                                  [it.camid for it in query], labels["camid"].to_numpy(), cfg["eval"]["max_rank"],
                                  same_camera_is_junk=has_cameras)
    exact_features = gallery.exact_features()
    k = min(k, gallery.index.ntotal)
    _, exact_top = knn(qf, exact_features, k, inner_product=True, use_gpu=False)
    _, found = gallery.search(qf, k)
    cmc = metrics["cmc"]
    metrics |= {"query_backbone": model.backbone_name, "rank1": float(cmc[0]), "rank5": float(cmc[4]),
                "rank10": float(cmc[9]), "depth": depth, "k": k,
                "recall": recall_at_k(found, exact_top),
                "queries_per_second": queries_per_second(lambda q: gallery.search(q, k), qf),
                "exact_queries_per_second": queries_per_second(
                    lambda q: knn(q, exact_features, k, inner_product=True, use_gpu=False), qf)}
    return metrics
