import pytest
import torch
import torch.nn.functional as F

from reid_kd.losses import batch_hard_triplet, label_smoothed_ce, squared_distances


def brute_force_triplet(x, y, margin, soft):
    losses = []
    for i in range(len(x)):
        pos = [torch.dist(x[i], x[j]) for j in range(len(x)) if y[j] == y[i]]
        neg = [torch.dist(x[i], x[j]) for j in range(len(x)) if y[j] != y[i]]
        if not neg:
            continue
        diff = max(pos) - min(neg)
        losses.append(F.softplus(diff) if soft else F.relu(diff + margin))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("soft", [False, True])
def test_batch_hard_triplet_matches_brute_force(soft):
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        x = torch.randn(12, 5, generator=g, dtype=torch.float64)
        y = torch.randint(0, 4, (12,), generator=g)
        got = batch_hard_triplet(x, y, margin=0.3, soft_margin=soft)
        assert got.item() == pytest.approx(brute_force_triplet(x, y, 0.3, soft).item(), abs=1e-5)


def test_normalised_triplet_measures_unit_features_and_ignores_scale():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (12,), generator=g)
    unit = x / x.norm(dim=1, keepdim=True)
    want = brute_force_triplet(unit, y, 0.3, False).item()
    assert batch_hard_triplet(x, y, 0.3, normalize=True).item() == pytest.approx(want, abs=1e-9)
    assert batch_hard_triplet(0.01 * x, y, 0.3, normalize=True).item() == pytest.approx(want, abs=1e-9)
    assert batch_hard_triplet(0.01 * x, y, 0.3).item() < want  # raw: shrinking the features lowers the loss


def test_triplet_gradients_are_finite_with_duplicate_features():
    x = torch.ones(4, 3, requires_grad=True)
    batch_hard_triplet(x, torch.tensor([0, 0, 1, 1])).backward()
    assert torch.isfinite(x.grad).all()


def test_label_smoothing_matches_definition():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    targets = torch.tensor([0, 2])
    eps = 0.1
    q = torch.full((2, 3), eps / 3)
    q[torch.arange(2), targets] += 1 - eps
    expected = -(q * logits.log_softmax(1)).sum(1).mean()
    assert label_smoothed_ce(logits, targets, eps).item() == pytest.approx(expected.item(), abs=1e-6)
    assert label_smoothed_ce(logits, targets, 0.0).item() == pytest.approx(F.cross_entropy(logits, targets).item())


def test_distances_within_one_batch_keep_the_graph_of_one_norm_tensor():
    """Bitwise the gradient of the N×N formula with one norm tensor used twice: computing the norms twice
    rounds the gradient otherwise, and 40 epochs turn that into other quickstart numbers."""
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
    w = torch.rand(32, 32, generator=torch.Generator().manual_seed(1))
    (squared_distances(x) * w).sum().backward()
    got, x.grad = x.grad, None
    sq = (x * x).sum(1)
    ((sq[:, None] + sq[None, :] - 2.0 * x @ x.t()).clamp_min(0.0) * w).sum().backward()
    assert torch.equal(got, x.grad)
