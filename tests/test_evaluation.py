"""`evaluate` against a plain NumPy argsort-every-row implementation of the re-ID protocol."""
import numpy as np
import pytest

from reid_kd.evaluation import evaluate


def reference(qf, gf, q_pids, g_pids, q_cams, g_cams, metric, max_rank):
    """Deliberately plain: full distance matrix, stable argsort of every row, loops over queries."""
    if metric == "cosine":
        qf = qf / np.maximum(np.linalg.norm(qf, axis=1, keepdims=True), 1e-12)
        gf = gf / np.maximum(np.linalg.norm(gf, axis=1, keepdims=True), 1e-12)
        dist = -(qf @ gf.T)
    else:
        dist = ((qf[:, None, :] - gf[None, :, :]) ** 2).sum(-1)
    aps, inps, cmcs = [], [], []
    for i in range(len(qf)):
        order = np.argsort(dist[i], kind="stable")
        keep = ~((g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i]))
        match = (g_pids[order] == q_pids[i])[keep]
        if not match.any():
            continue
        hit_ranks = np.flatnonzero(match) + 1
        aps.append(np.mean(np.arange(1, len(hit_ranks) + 1) / hit_ranks))
        inps.append(len(hit_ranks) / hit_ranks[-1])
        cmc = np.zeros(max_rank)
        cmc[hit_ranks[0] - 1:] = 1
        cmcs.append(cmc)
    if not aps:
        return None, None, None, 0
    return np.mean(aps), np.mean(inps), np.mean(cmcs, 0), len(aps)


def random_case(rng, metric):
    """Features on a small integer grid, so scores are exact and ties are real, in FAISS and NumPy."""
    n_q, n_g, dim = rng.integers(1, 40), rng.integers(1, 80), int(rng.integers(2, 10))
    if metric == "cosine":  # axis-aligned queries: q.g is one gallery component, computed exactly
        axis = rng.integers(0, dim, n_q)
        qf = np.zeros((n_q, dim), np.float32)
        qf[np.arange(n_q), axis] = rng.choice([-1.0, 1.0], n_q)
    else:
        qf = rng.integers(-2, 3, (n_q, dim)).astype(np.float32)
    gf = rng.integers(-2, 3, (n_g, dim)).astype(np.float32)
    dup = rng.integers(0, n_g, n_g // 3)  # exact duplicates in the gallery, some with other labels
    gf[rng.integers(0, n_g, len(dup))] = gf[dup]
    n_ids, n_cams = int(rng.integers(1, 6)), int(rng.integers(1, 4))
    q_pids, g_pids = rng.integers(0, n_ids + 1, n_q), rng.integers(0, n_ids, n_g)  # id n_ids: no positive
    q_cams, g_cams = rng.integers(0, n_cams, n_q), rng.integers(0, n_cams, n_g)
    return qf, gf, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_evaluate_equals_plain_argsort_reference(metric):
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(200):
        case = random_case(rng, metric)
        max_rank = int(rng.integers(1, 100))  # often longer than the gallery
        ref = reference(*case, metric, max_rank)
        if ref[3] == 0:
            with pytest.raises(ValueError):
                evaluate(*case, metric=metric, max_rank=max_rank)
            continue
        got = evaluate(*case, metric=metric, max_rank=max_rank, query_chunk=int(rng.integers(1, 8)))
        assert got["num_valid_queries"] == ref[3]
        assert got["mAP"] == pytest.approx(ref[0], abs=1e-6)
        assert got["mINP"] == pytest.approx(ref[1], abs=1e-6)
        assert got["cmc"].shape == (max_rank,)
        np.testing.assert_allclose(got["cmc"], ref[2], atol=1e-6)
        checked += 1
    assert checked > 100


def test_ties_are_broken_by_gallery_order():
    """Two identical gallery vectors, the positive second: it must rank second, not first."""
    qf = np.array([[1.0, 0.0]], np.float32)
    gf = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)
    res = evaluate(qf, gf, [1], [2, 1], [0], [1, 1], max_rank=2)
    assert res["mAP"] == pytest.approx(0.5)
    assert list(res["cmc"]) == [0.0, 1.0]


def test_same_id_same_camera_is_junk():
    qf = np.array([[1.0, 0.0]], np.float32)
    gf = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], np.float32)
    # the nearest item shares the query's id *and* camera: it is removed, not counted as a hit
    res = evaluate(qf, gf, [5], [5, 7, 5], [0], [0, 1, 1], max_rank=3)
    assert res["mAP"] == pytest.approx(0.5)  # the positive at [0, 1] ranks second of the kept two
    assert res["cmc"][0] == 0.0 and res["cmc"][1] == 1.0
