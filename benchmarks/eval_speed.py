"""Time and peak memory of `evaluate` at real dataset sizes (random features, real protocol).

    python benchmarks/eval_speed.py                 # VeRi-776 size: 1678 queries, 11579 gallery
    python benchmarks/eval_speed.py --preset msmt17 # 11659 queries, 82161 gallery

Peak memory stays bounded by the query chunk (about 4M ranked entries at a time), not by
queries × gallery.
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from reid_kd.evaluation import evaluate

PRESETS = {"veri776": (1678, 11579, 776 - 576, 20), "market1501": (3368, 19732, 751, 6),
           "msmt17": (11659, 82161, 3060, 15)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="veri776")
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    n_q, n_g, n_ids, n_cams = PRESETS[args.preset]
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(n_ids, args.dim)).astype(np.float32)
    q_pids, g_pids = rng.integers(0, n_ids, n_q), rng.integers(0, n_ids, n_g)
    qf = centres[q_pids] + rng.normal(scale=4.0, size=(n_q, args.dim)).astype(np.float32)
    gf = centres[g_pids] + rng.normal(scale=4.0, size=(n_g, args.dim)).astype(np.float32)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    res = evaluate(qf, gf, q_pids, g_pids, rng.integers(0, n_cams, n_q), rng.integers(0, n_cams, n_g))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    full_matrix_mb = n_q * n_g * 8 / 2**20
    print(f"{args.preset}: {n_q} queries x {n_g} gallery, dim {args.dim}")
    print(f"evaluate: {seconds:.1f} s, {n_q / seconds:.0f} queries/s; mAP {100 * res['mAP']:.2f}, "
          f"Rank-1 {100 * res['cmc'][0]:.2f}, mINP {100 * res['mINP']:.2f}")
    print(f"peak RSS {peak / 1024:.0f} MiB (grew {(peak - before) / 1024:.0f} MiB); "
          f"a full int64 ranking matrix alone would take {full_matrix_mb:.0f} MiB")


if __name__ == "__main__":
    main()
