"""Exact nearest-neighbour ranking with FAISS, in query chunks so memory stays bounded.

FAISS returns each query's whole gallery ranking (exact flat index, k = gallery size), so mAP
and mINP are computed over the full ranking, never a truncated top-k. Ties are broken by gallery
index (a stable order), so results do not depend on FAISS's internal tie order.
"""
from __future__ import annotations

from typing import Iterator

import faiss
import numpy as np

GPU_MAX_K = 2048  # FAISS GPU k-selection limit; larger galleries are ranked on the CPU
MAX_CHUNK_ELEMENTS = 1 << 22  # ranked entries per chunk: a few hundred MB of working arrays


def l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def build_index(gallery: np.ndarray, metric: str, use_gpu: bool) -> faiss.Index:
    dim = gallery.shape[1]
    index = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
    if use_gpu and faiss.get_num_gpus() > 0 and len(gallery) <= GPU_MAX_K:
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(gallery)
    return index


def ranked_chunks(query: np.ndarray, gallery: np.ndarray, metric: str = "cosine", query_chunk: int = 1024,
                  use_gpu: bool = True) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """Yield (query slice, scores, gallery indices), each row ranked best first over the whole gallery.

    Scores are similarities for `cosine` (features L2-normalised here) and squared distances for
    `euclidean`.
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"unknown metric {metric!r}; use 'cosine' or 'euclidean'")
    query = np.ascontiguousarray(query, dtype=np.float32)
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    if metric == "cosine":
        query, gallery = l2_normalise(query), l2_normalise(gallery)
    n_gallery = len(gallery)
    index = build_index(gallery, metric, use_gpu)
    chunk = max(1, min(query_chunk, MAX_CHUNK_ELEMENTS // max(n_gallery, 1)))
    for start in range(0, len(query), chunk):
        rows = slice(start, min(start + chunk, len(query)))
        scores, ids = index.search(query[rows], n_gallery)
        primary = -scores if metric == "cosine" else scores
        order = np.lexsort((ids, primary), axis=-1)  # stable: equal scores keep gallery order
        yield rows, np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
