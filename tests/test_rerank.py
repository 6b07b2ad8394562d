"""Sparse k-reciprocal re-ranking (evaluation/rerank.py) against a deliberately plain dense version of the
authors' algorithm (zhunzhong07/person-re-ranking), written here with loops and full matrices."""
import numpy as np
import pandas as pd
import pytest
import torch

from reid_kd.bench.board_text import scoring
from reid_kd.cli import queries_line
from reid_kd.evaluation import evaluate
from reid_kd.evaluation.ranking import Workspace
from reid_kd.evaluation.rerank import rerank_blocks


def plain_rerank(qf, gf, metric, k1, k2, lam):
    """Final re-ranked query x gallery distances, step by step as the authors' code, in float64."""
    x = np.concatenate([qf, gf]).astype(np.float64)
    if metric == "cosine":
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    n, n_q = len(x), len(qf)
    dist = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    dist = np.transpose(dist / np.max(dist, axis=0))
    rank = np.argsort(dist, axis=1, kind="stable")

    def reciprocal(i, k):
        return np.array([j for j in rank[i, :k + 1] if i in rank[j, :k + 1]])

    v = np.zeros((n, n))
    for i in range(n):
        r = reciprocal(i, k1)
        expanded = list(r)
        for c in r:
            rc = reciprocal(c, int(np.around(k1 / 2)))
            if len(np.intersect1d(rc, r)) > 2 / 3 * len(rc):
                expanded += list(rc)
        idx = np.unique(expanded)
        weight = np.exp(-dist[i, idx])
        v[i, idx] = weight / weight.sum()
    v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
    jaccard = np.zeros((n_q, n))
    for i in range(n_q):
        m = np.minimum(v[i][None, :], v).sum(1)
        jaccard[i] = 1 - m / (2 - m)
    return (jaccard * (1 - lam) + dist[:n_q] * lam)[:, n_q:]


def clustered(rng, n_q=14, n_g=50, ids=6, dim=8):
    centres = rng.normal(size=(ids, dim))
    q_pids, g_pids = rng.integers(0, ids, n_q), rng.integers(0, ids, n_g)
    qf = (centres[q_pids] + 0.7 * rng.normal(size=(n_q, dim))).astype(np.float32)
    gf = (centres[g_pids] + 0.7 * rng.normal(size=(n_g, dim))).astype(np.float32)
    return qf, gf, q_pids, g_pids, rng.integers(0, 3, n_q), rng.integers(0, 3, n_g)


@pytest.mark.parametrize("metric,k1,k2,lam", [("cosine", 20, 6, 0.3), ("cosine", 5, 3, 0.5), ("euclidean", 8, 1, 0.1)])
def test_sparse_rerank_equals_the_dense_algorithm(metric, k1, k2, lam):
    qf, gf, *_ = clustered(np.random.default_rng(k1))
    blocks = rerank_blocks(torch.from_numpy(qf), torch.from_numpy(gf), metric, 4, Workspace(), use_gpu=False,
                           k1=k1, k2=k2, lam=lam)
    got = -torch.cat([scores.clone() for _, scores in blocks]).numpy()
    np.testing.assert_allclose(got, plain_rerank(qf, gf, metric, k1, k2, lam), atol=1e-6)


def plain_map(dist, q_pids, g_pids, q_cams, g_cams):
    aps = []
    for i in range(len(dist)):
        order = np.argsort(dist[i], kind="stable")
        keep = ~((g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i]))
        hits = np.flatnonzero((g_pids[order] == q_pids[i])[keep]) + 1
        if len(hits):
            aps.append(np.mean(np.arange(1, len(hits) + 1) / hits))
    return np.mean(aps)


def test_evaluate_with_rerank_scores_the_reranked_distances():
    case = clustered(np.random.default_rng(7))
    options = {"k1": 20, "k2": 6, "lam": 0.3}
    got = evaluate(*case, rerank=options, use_gpu=False)
    assert got["mAP"] == pytest.approx(plain_map(plain_rerank(*case[:2], "cosine", 20, 6, 0.3), *case[2:]), abs=1e-9)
    assert got["mAP"] != pytest.approx(evaluate(*case)["mAP"], abs=1e-6)  # re-ranking changed the ranking


def test_tables_say_when_reranking_was_on():
    options = {"k1": 20, "k2": 6, "lam": 0.3}
    assert "Re-ranked: k-reciprocal (k1 20, k2 6, λ 0.3)." in queries_line(
        {"num_valid_queries": 3, "num_queries": 4, "rerank": options})
    assert "Re-rank" not in queries_line({"num_valid_queries": 3, "num_queries": 4})
    assert scoring(pd.DataFrame({"rerank": [options, options]})) == "Re-ranking: k-reciprocal (k1 20, k2 6, λ 0.3)."
    assert scoring(pd.DataFrame({"mAP": [0.5]})) == ""
