"""D3still: Xie, Lin, Cai, Xu, Zhang, Du and He, "D3still: Decoupled Differential Distillation for Asymmetric
Image Retrieval", CVPR 2024.

For each sample i the teacher ranks the batch by cosine similarity t_j = t̂_i·t̂_j of L2-normalised retrieval
features (itself first); the student's similarity to the same samples is the cross one, s_j = ŝ_i·t̂_j.
Three terms, each times its weight:
- top-1 (`d3still_top1`): the Euclidean norm, over the batch, of t_1 − s_1 (the teacher's top similarity,
  normally the sample itself, against the student's to the same sample), divided by the batch size B;
- among ranks 2..k, the differences of every ordered pair, d_s[a, b] = s_b − s_a and d_t[a, b] = t_b − t_a,
  compared as (d_s − d_t) / (0.1 + |d_t|). A pair whose student difference has the teacher's sign is a
  simple one, one of the opposite sign (the student's order flipped) a hard one; pairs the teacher or the
  student does not order (a zero difference) count in neither. Per sample, the norm of its hard pairs'
  (`d3still_hard`) or simple pairs' (`d3still_simple`) comparisons, averaged over the batch, divided by k − 1.
All three are 0 at the teacher's output.

Defaults (`reidkd methods` prints their sources): AIR-Distiller (SCY-X/D3still, `distillers/D3.py`, the
authors' code) with its MSMT17 ResNet-101 → ResNet-18 config, equal to its defaults: `top_k = 10`,
`weight_top1 = 50` (α), `weight_hard = 2` (β), `weight_simple = 1` (γ), times its KD weight 1; the 0.1 is
its constant. The weights are AIR-Distiller's, not yet checked against our gradient window or tuned.

Differences from AIR-Distiller's D3.py:
- batch: it ranks a separate, randomly shuffled distillation batch of 256 images (the student at low, the
  teacher at high resolution); we rank the training P×K batch, both networks seeing the same images at the
  training resolution. A P×K batch holds K − 1 images of each sample's identity among its neighbours;
- `top_k` is capped at the batch, and the relation terms divide by the capped k − 1 (it divides by its
  configured top_k − 1 whatever its batch);
- a teacher pair of exactly equal similarities: it sets that difference to 1, so the pair counts (hard or
  simple by the student difference's sign) against a target difference of 1; we leave it out (no order to
  keep). It only happens on exact ties;
- the feature: our `bn_feat` (after the BN neck, or the retrieval embedding head where the model has one)
  for its `retrieval_feat` (its BN-ReLU-Linear-BN head's output); both networks' must have one width;
- float32 where it computes the similarities in float64; the top-k by `topk` where it sorts whole rows;
- three named terms whose sum is its one `loss_kd`.
"""
from __future__ import annotations

import torch
from torch import nn

from reid_kd.distill.base import Distiller
from reid_kd.distill.common import teacher_neighbours
from reid_kd.models.reid_model import ModelOutput

MARGIN = 0.1  # keeps the comparison of a pair the teacher hardly separates finite


def pair_differences(sims: torch.Tensor) -> torch.Tensor:
    """B × k × k: entry [i, a, b] = sims[i, b] − sims[i, a], flattened to B × k²."""
    return (sims.unsqueeze(1) - sims.unsqueeze(2)).flatten(1)


class D3still(Distiller):
    name = "d3still"
    same_width = True

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: dict):
        super().__init__(student, teacher, cfg)
        self.k = cfg["top_k"]
        self.w_top1, self.w_hard, self.w_simple = cfg["weight_top1"], cfg["weight_hard"], cfg["weight_simple"]

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        s_top, t_top = teacher_neighbours(student.bn_feat, teacher.bn_feat, self.k)
        b, k = t_top.shape
        top1 = torch.linalg.vector_norm(t_top[:, 0] - s_top[:, 0]) / b
        d_s, d_t = pair_differences(s_top[:, 1:]), pair_differences(t_top[:, 1:])
        compared = (d_s - d_t) / (MARGIN + d_t.abs())
        agreement = (d_s * d_t).detach()  # > 0: the student orders the pair as the teacher does
        hard = torch.linalg.vector_norm(compared * (agreement < 0), dim=1).mean() / (k - 1)
        simple = torch.linalg.vector_norm(compared * (agreement > 0), dim=1).mean() / (k - 1)
        return {"d3still_top1": self.w_top1 * top1, "d3still_hard": self.w_hard * hard,
                "d3still_simple": self.w_simple * simple}
