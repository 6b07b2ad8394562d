"""Rank counting (evaluation/ranking.py) against the plain argsort-every-row reference, in its hard corners:
several blocks, positives sharing buckets with many items, long runs of exact ties, tensor input."""
import numpy as np
import pytest
import torch

from helpers import random_case, reference
from reid_kd.evaluation import evaluate
from reid_kd.evaluation import ranking
from reid_kd.evaluation.ranking import same_id_pairs


def check(case, metric, max_rank, **options):
    ref = reference(*case, metric, max_rank)
    got = evaluate(*case, metric=metric, max_rank=max_rank, **options)
    assert got["num_valid_queries"] == ref[3]
    assert got["mAP"] == pytest.approx(ref[0], abs=1e-9)
    assert got["mINP"] == pytest.approx(ref[1], abs=1e-9)
    np.testing.assert_allclose(got["cmc"], ref[2], atol=1e-12)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_float_features_over_many_blocks_and_few_buckets(monkeypatch, metric):
    """Few buckets put many items beside each positive, small blocks split the queries: same numbers."""
    rng = np.random.default_rng(1)
    n_q, n_g, ids = 60, 400, 12
    pids_q, pids_g = rng.integers(0, ids + 1, n_q), rng.integers(0, ids, n_g)
    centres = rng.normal(size=(ids + 1, 16)).astype(np.float32)
    qf = centres[pids_q] + rng.normal(scale=1.5, size=(n_q, 16)).astype(np.float32)
    gf = centres[pids_g] + rng.normal(scale=1.5, size=(n_g, 16)).astype(np.float32)
    case = (qf, gf, pids_q, pids_g, rng.integers(0, 3, n_q), rng.integers(0, 3, n_g))
    for buckets, block in ((4, 1000), (64, 50), (4096, 1 << 24)):
        monkeypatch.setattr(ranking, "BUCKETS", buckets)
        monkeypatch.setattr(ranking, "BLOCK_ELEMENTS", block)
        check(case, metric, 50)


def test_long_runs_of_exact_ties_are_broken_by_gallery_order(monkeypatch):
    """Every gallery item has one of two vectors: each positive ties hundreds of items, settled in small steps."""
    monkeypatch.setattr(ranking, "PAIRS", 7)
    rng = np.random.default_rng(2)
    n_q, n_g = 9, 300
    gf = np.where(rng.random((n_g, 1)) < 0.5, [[1.0, 0.0]], [[0.0, 1.0]]).astype(np.float32)
    qf = np.tile(np.array([[1.0, 0.0]], np.float32), (n_q, 1))
    case = (qf, gf, rng.integers(0, 4, n_q), rng.integers(0, 4, n_g), rng.integers(0, 2, n_q), rng.integers(0, 2, n_g))
    for metric in ("cosine", "euclidean"):
        check(case, metric, 20)


def test_tensor_features_give_the_numbers_of_numpy_features():
    rng = np.random.default_rng(3)
    case = random_case(rng, "euclidean")
    while reference(*case, "euclidean", 10)[3] == 0:
        case = random_case(rng, "euclidean")
    as_numpy = evaluate(*case, metric="euclidean", max_rank=10)
    as_tensor = evaluate(torch.from_numpy(case[0]), torch.from_numpy(case[1]), *map(torch.as_tensor, case[2:]),
                         metric="euclidean", max_rank=10, device="cpu")
    assert as_tensor["mAP"] == as_numpy["mAP"] and as_tensor["mINP"] == as_numpy["mINP"]
    np.testing.assert_array_equal(as_tensor["cmc"], as_numpy["cmc"])


def test_same_id_pairs_are_every_pair_of_one_identity():
    rng = np.random.default_rng(4)
    q, g = torch.from_numpy(rng.integers(0, 7, 30)), torch.from_numpy(rng.integers(0, 5, 50))
    sorted_pids, order = torch.sort(g, stable=True)
    rows, cols = same_id_pairs(q, order, sorted_pids)
    expected = torch.nonzero(q[:, None] == g[None, :])
    assert torch.equal(torch.stack([rows, cols], 1), expected)  # row-major, gallery order within a row


def test_non_finite_features_are_refused():
    qf = np.array([[1.0, np.nan]], np.float32)
    with pytest.raises(ValueError, match="NaN or infinite"):
        evaluate(qf, np.ones((2, 2), np.float32), [0], [0, 1], [0], [1, 1])
