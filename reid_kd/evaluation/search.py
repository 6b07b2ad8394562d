"""FAISS k-nearest-neighbour search: ranked lists, re-ranking neighbourhoods, gallery search.

Exact (brute-force) search, on the GPU when FAISS sees one and k is within its GPU limit, else on the
CPU. Metrics are computed by counting in `ranking.py`, which needs no neighbour list at all.
"""
from __future__ import annotations

import faiss
import numpy as np

GPU_MAX_K = 2048  # FAISS GPU k-selection limit: a larger k is searched on the CPU


def l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def knn(query: np.ndarray, base: np.ndarray, k: int, inner_product: bool = False,
        use_gpu: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of each query's `k` nearest rows of `base`, best first.

    Squared Euclidean distances (ascending), or inner products (descending) with `inner_product`.
    Runs without building an index, so `base` is not copied.
    """
    query = np.ascontiguousarray(query, dtype=np.float32)
    base = np.ascontiguousarray(base, dtype=np.float32)
    k = min(k, len(base))
    metric = faiss.METRIC_INNER_PRODUCT if inner_product else faiss.METRIC_L2
    if use_gpu and k <= GPU_MAX_K and faiss.get_num_gpus() > 0:
        return faiss.knn_gpu(faiss.StandardGpuResources(), query, base, k, metric=metric)
    return faiss.knn(query, base, k, metric=metric)


def top_k(query: np.ndarray, gallery: np.ndarray, k: int, metric: str = "cosine",
          use_gpu: bool = True) -> np.ndarray:
    """Gallery indices of each query's `k` best matches, best first (cosine: of L2-normalised features).

    Equal scores are ordered by gallery index.
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"unknown metric {metric!r}; use 'cosine' or 'euclidean'")
    if metric == "cosine":
        scores, ids = knn(l2_normalise(query), l2_normalise(gallery), k, inner_product=True, use_gpu=use_gpu)
        scores = -scores
    else:
        scores, ids = knn(query, gallery, k, use_gpu=use_gpu)
    order = np.lexsort((ids, scores), axis=-1)
    return np.take_along_axis(ids, order, 1)
