from collections import Counter

import pytest

from reid_kd.data.sampler import PKBatchSampler


@pytest.mark.parametrize("p,k", [(4, 2), (3, 4), (5, 3)])
def test_every_batch_has_p_identities_with_k_images(p, k):
    pids = [0] * 9 + [1] * 2 + [2] * 5 + [3] * 1 + [4] * 7 + [5] * 4 + [6] * 3
    sampler = PKBatchSampler(pids, p, k, seed=1)
    batches = list(sampler)
    assert batches and len(batches) <= len(sampler)
    for batch in batches:
        counts = Counter(pids[i] for i in batch)
        assert len(batch) == p * k and len(counts) == p and set(counts.values()) == {k}
    # identities with at least K images never repeat an image inside one group
    for batch in batches:
        for j in range(p):
            group = batch[j * k:(j + 1) * k]
            if pids.count(pids[group[0]]) >= k:
                assert len(set(group)) == k


def test_order_is_a_function_of_seed_and_epoch():
    pids = [i // 4 for i in range(80)]
    a, b = PKBatchSampler(pids, 4, 4, seed=0), PKBatchSampler(pids, 4, 4, seed=0)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(PKBatchSampler(pids, 4, 4, seed=1)) != list(PKBatchSampler(pids, 4, 4, seed=0))


def test_too_few_identities_is_an_error():
    with pytest.raises(ValueError, match="data.batch_p. is 4, but the train split has only"):
        PKBatchSampler([0, 0, 1, 1], 4, 2)
