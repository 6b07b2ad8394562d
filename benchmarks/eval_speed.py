"""Exact evaluation (and k-reciprocal re-ranking) at real dataset sizes, beside the bare similarity product.

    python benchmarks/eval_speed.py                                  # VeRi-776 size, dim 2048
    python benchmarks/eval_speed.py --preset msmt17 --dim 512
    python benchmarks/eval_speed.py --preset market1501 --rerank     # also time re-ranking

Features are random around identity centres, in the real protocol's sizes (queries, gallery, identities,
cameras). The bare product is the matrix product `evaluate` itself computes: the same query blocks
against the whole gallery, same dtype and threads, into one reused buffer, nothing else. Each
measurement runs in a process of its own, so its peak RSS (features included) is its own.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

PRESETS = {"veri776": (1678, 11579, 200, 20), "market1501": (3368, 19732, 750, 6),
           "msmt17": (11659, 82161, 3060, 15)}  # queries, gallery, test identities, cameras


def features(preset: str, dim: int):
    """Seeded features and labels, drawn in float32 pieces (no float64 copy inflates the peak RSS)."""
    n_q, n_g, n_ids, n_cams = PRESETS[preset]
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((n_ids, dim), dtype=np.float32)
    out = []
    for n in (n_q, n_g):
        pids = rng.integers(0, n_ids, n)
        x = np.empty((n, dim), np.float32)
        for start in range(0, n, 4096):
            part = slice(start, start + 4096)
            x[part] = centres[pids[part]] + 4.0 * rng.standard_normal((len(pids[part]), dim), dtype=np.float32)
        out.append((x, pids, rng.integers(0, n_cams, n)))
    return out


def measure(what: str, preset: str, dim: int) -> dict:
    (qf, q_pids, q_cams), (gf, g_pids, g_cams) = features(preset, dim)
    start = time.perf_counter()
    result = {}
    if what == "product":
        from reid_kd.evaluation.ranking import block_rows
        q, g = torch.from_numpy(qf), torch.from_numpy(gf)
        q = q / q.norm(dim=1, keepdim=True)
        rows = block_rows(len(g), 1024)
        out = torch.empty(rows, len(g))
        for s in range(0, len(q), rows):
            block = q[s:s + rows]
            torch.mm(block, g.T, out=out[:len(block)])
    else:
        from reid_kd.evaluation import evaluate
        rerank = {"k1": 20, "k2": 6, "lam": 0.3} if what == "rerank" else None
        res = evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams, rerank=rerank)
        result = {"mAP": res["mAP"], "rank1": float(res["cmc"][0]), "mINP": res["mINP"]}
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="veri776")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--rerank", action="store_true", help="also time evaluation with k-reciprocal re-ranking")
    parser.add_argument("--measure", choices=("product", "evaluate", "rerank"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.preset, args.dim)))
        return
    n_q, n_g, n_ids, n_cams = PRESETS[args.preset]
    print(f"{args.preset}: {n_q} queries x {n_g} gallery, dim {args.dim}, float32, "
          f"{torch.get_num_threads()} torch threads")
    got = {}
    for what in ("product", "evaluate") + (("rerank",) if args.rerank else ()):
        cmd = [sys.executable, __file__, "--preset", args.preset, "--dim", str(args.dim), "--measure", what]
        got[what] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        r = got[what]
        scores = f"; mAP {100 * r['mAP']:.2f}, Rank-1 {100 * r['rank1']:.2f}, mINP {100 * r['mINP']:.2f}" \
            if "mAP" in r else ""
        ratio = f" ({r['seconds'] / got['product']['seconds']:.2f}x the bare product)" if what != "product" else ""
        print(f"{what:>8}: {r['seconds']:8.2f} s{ratio}, peak RSS {r['peak_mib']:.0f} MiB{scores}")


if __name__ == "__main__":
    main()
