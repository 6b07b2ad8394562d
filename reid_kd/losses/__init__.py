"""Re-ID losses: label-smoothed identity loss and batch-hard triplet loss (vectorised)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from reid_kd.utils import distributed


def label_smoothed_ce(logits: torch.Tensor, targets: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """Cross-entropy against (1 - eps) one-hot + eps / C uniform (Szegedy et al., 2016)."""
    log_probs = F.log_softmax(logits, dim=1)
    nll = -log_probs.gather(1, targets[:, None]).squeeze(1)
    uniform = -log_probs.mean(dim=1)
    return ((1 - epsilon) * nll + epsilon * uniform).mean()


def squared_distances(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances between the rows of x and those of y (default x), clamped at zero."""
    sq_x = (x * x).sum(1)
    if y is None:  # one norm tensor used twice: the very graph (and rounding) of the N×N case
        return (sq_x[:, None] + sq_x[None, :] - 2.0 * x @ x.t()).clamp_min(0.0)
    return (sq_x[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.t()).clamp_min(0.0)


def pairwise_euclidean(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Euclidean distances (rows of x to rows of y, default x), clamped before the root: finite gradients."""
    return squared_distances(x, y).clamp_min(1e-12).sqrt()


def batch_hard_triplet(feats: torch.Tensor, targets: torch.Tensor, margin: float = 0.3,
                       soft_margin: bool = False, normalize: bool = False) -> torch.Tensor:
    """Hermans et al., 2017: each anchor's farthest positive against its nearest negative.

    `soft_margin` replaces the hinge by log(1 + exp(d_ap - d_an)). `normalize` measures distances
    between L2-normalised features, so the loss cannot be lowered by shrinking the features' scale.
    Under data-parallel training each rank's anchors are mined against the whole global batch (every
    rank's features, gradients flowing back), so the loss is the one a single process would compute.
    """
    if normalize:
        feats = F.normalize(feats, dim=1)
    others, other_targets = distributed.gather_rows_with_grad(feats), distributed.gather_rows(targets)
    dist = pairwise_euclidean(feats, others if others is not feats else None)
    same = targets[:, None] == other_targets[None, :]
    hardest_pos = dist.masked_fill(~same, float("-inf")).amax(1)
    hardest_neg = dist.masked_fill(same, float("inf")).amin(1)
    valid = torch.isfinite(hardest_neg)  # an anchor needs a negative in the batch
    diff = hardest_pos[valid] - hardest_neg[valid]
    if diff.numel() == 0:
        return feats.sum() * 0.0
    if soft_margin:
        return F.softplus(diff).mean()
    return F.relu(diff + margin).mean()


def reid_losses(out, targets: torch.Tensor, train_cfg: dict) -> dict[str, torch.Tensor]:
    """The BNNeck recipe: ID loss on the logits (after the neck), triplet on the pooled feature."""
    losses = {}
    if train_cfg["id_loss_weight"] > 0 and out.logits is not None:
        losses["id"] = train_cfg["id_loss_weight"] * label_smoothed_ce(out.logits, targets, train_cfg["label_smooth"])
    if train_cfg["triplet_weight"] > 0:
        losses["triplet"] = train_cfg["triplet_weight"] * batch_hard_triplet(
            out.global_feat, targets, train_cfg["triplet_margin"], train_cfg["triplet_soft_margin"],
            train_cfg["triplet_normalize"])
    return losses
