"""RKD: Park, Kim, Lu and Cho, "Relational Knowledge Distillation", CVPR 2019.

Distance-wise: Euclidean distances between all pairs of embeddings, each matrix divided by the mean
of its off-diagonal distances; angle-wise: cosines of the angles e_i - e_j, e_k - e_j over all
triplets. Both matched with the Huber (smooth L1) loss. Defaults: `weight_distance = 25`,
`weight_angle = 50` (the paper's λ_D, λ_A) on the `embedding` (`global_feat`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid_kd.distill.base import Distiller
from reid_kd.losses import pairwise_euclidean
from reid_kd.models.reid_model import ModelOutput


def normalised_distance(e: torch.Tensor) -> torch.Tensor:
    d = pairwise_euclidean(e.float())
    off = ~torch.eye(len(e), dtype=torch.bool, device=e.device)
    d = d * off
    return d / d[off].mean().clamp_min(1e-12)


def angles(e: torch.Tensor) -> torch.Tensor:
    """B×B×B: entry (j, i, k) is the cosine of the angle at e_j between e_i and e_k."""
    diff = F.normalize(e.float()[None, :, :] - e.float()[:, None, :], dim=2)
    return diff @ diff.transpose(1, 2)


class RKD(Distiller):
    name = "rkd"

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: dict):
        super().__init__(student, teacher, cfg)
        self.w_d, self.w_a, self.embedding = cfg["weight_distance"], cfg["weight_angle"], cfg["embedding"]

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        s, t = getattr(student, self.embedding), getattr(teacher, self.embedding)
        return {"rkd_distance": self.w_d * F.smooth_l1_loss(normalised_distance(s), normalised_distance(t)),
                "rkd_angle": self.w_a * F.smooth_l1_loss(angles(s), angles(t))}
