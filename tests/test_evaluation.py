"""`evaluate` against a plain NumPy argsort-every-row implementation of the re-ID protocol."""
import numpy as np
import pytest

from helpers import random_case, reference
from reid_kd.evaluation import evaluate


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
        np.testing.assert_allclose(got["query_ap"], ref[4], atol=1e-6)  # NaN where skipped, in both
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
