"""Gallery indexes side by side: queries/s and recall@10 of Flat (exact), IVF-PQ and HNSW on one gallery.

    python benchmarks/index_speed.py                          # 100k gallery, 512-d, 2,000 queries
    python benchmarks/index_speed.py --gallery 20000 --dim 576

Features are random around identity centres (10 images per identity, noise of the centres' scale, so an
image's nearest neighbours are mostly its identity's, as a re-ID gallery's are), L2-normalised as the
`bn_feat` an index holds. Every index is built by `reid_kd.deploy.index.new_index` and searched as
`reidkd search` does; recall@10 is against the exact top 10 (FAISS brute force over the same features),
and each index's queries/s is printed beside the exact search's, measured in the same run.
"""
from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from reid_kd.deploy.index import new_index, set_search_params
from reid_kd.deploy.index_eval import queries_per_second, recall_at_k
from reid_kd.evaluation.search import knn

SETTINGS = [("Flat", None), ("IVF4096,PQ64", "nprobe=8"), ("IVF4096,PQ64", "nprobe=32"),
            ("IVF4096,PQ64", "nprobe=128"), ("HNSW32", "efSearch=32"), ("HNSW32", "efSearch=128")]


def features(n_gallery: int, n_query: int, dim: int, per_id: int = 10, noise: float = 1.0):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((max(1, n_gallery // per_id), dim), dtype=np.float32)

    def draw(n):
        x = centres[rng.integers(0, len(centres), n)] + noise * rng.standard_normal((n, dim), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return draw(n_gallery), draw(n_query)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    gallery, queries = features(args.gallery, args.queries, args.dim)
    print(f"gallery {args.gallery} x {args.dim}, {args.queries} queries, k={args.k}, FAISS {faiss.__version__}, "
          f"{faiss.omp_get_max_threads()} threads")
    _, exact = knn(queries, gallery, args.k, inner_product=True, use_gpu=False)
    exact_qps = queries_per_second(lambda q: knn(q, gallery, args.k, inner_product=True, use_gpu=False), queries)
    print("| index | search params | build s | size MB | queries/s | vs exact | recall@10 |")
    print("|---|---|---|---|---|---|---|")
    built: dict[str, tuple[faiss.Index, float, float]] = {}
    for factory, params in SETTINGS:
        if factory not in built:
            start = time.perf_counter()
            index = new_index(factory, gallery, train_size=None)
            built[factory] = (index, time.perf_counter() - start, faiss.serialize_index(index).nbytes / 2**20)
        index, seconds, size = built[factory]
        set_search_params(index, params)
        qps = queries_per_second(lambda q: index.search(q, args.k), queries)
        found = index.search(queries, args.k)[1]
        print(f"| {factory} | {params or '-'} | {seconds:.1f} | {size:.0f} | {qps:,.0f} | {qps / exact_qps:.2f}x | "
              f"{recall_at_k(found, exact):.3f} |", flush=True)
    print(f"exact search (faiss.knn, the bare brute force): {exact_qps:,.0f} queries/s")


if __name__ == "__main__":
    main()
