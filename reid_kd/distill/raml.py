"""RAML: Suma and Tolias, "Large-to-Small Image Resolution Asymmetry in Deep Metric Learning", WACV 2023.

On L2-normalised retrieval features ŝ (student) and t̂ (teacher), three terms:
- absolute (`raml_abs`): each student vector regresses onto its teacher vector, the mean over the batch of
  (1 − ŝ_i·t̂_i + ε)²;
- student-teacher relations (`raml_ts`): the mean over pairs i ≠ j of (ŝ_i·t̂_j − t̂_i·t̂_j + ε)², times
  `lambda_ts`;
- student-student relations (`raml_ss`): the same with ŝ_i·ŝ_j, times `lambda_ss`;
each times `weight`; a term whose lambda is 0 is left out. ε (`eps`, 1e-6) shifts every difference before
squaring, as the reference code does: at the teacher's output the loss is `weight` × ε² × (1 + λ_ts + λ_ss).

Defaults (`reidkd methods` prints their sources): AIR-Distiller (SCY-X/D3still, `distillers/RAML.py`) with its
MSMT17 ResNet-101 → ResNet-18 config: `weight = 5`, `lambda_ts = 0.7482`, `lambda_ss = 0.6778`. The weight is
AIR-Distiller's, not yet checked against our gradient window or tuned.

Differences from AIR-Distiller's RAML.py:
- `lambda_ss`: its RAML distiller reads LAMBDA1 (0.7482) for both lambdas, so its runs weighed the
  student-student term 0.7482; we take LAMBDA2 = 0.6778, its config's and its loss class's own default;
- batch: it relates a separate, randomly shuffled distillation batch of 256 images (the student at low,
  the teacher at high resolution); we relate the training P×K batch, both networks seeing the same images
  at the training resolution;
- the feature: our `bn_feat` (after the BN neck, or the retrieval embedding head where the model has one)
  for its `retrieval_feat` (its BN-ReLU-Linear-BN head's output); both networks' must have one width;
- three named terms whose sum is its one `loss_kd`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid_kd.distill.base import Distiller
from reid_kd.models.reid_model import ModelOutput


class RAML(Distiller):
    name = "raml"
    same_width = True

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: dict):
        super().__init__(student, teacher, cfg)
        self.weight, self.eps = cfg["weight"], cfg["eps"]
        self.lambda_ts, self.lambda_ss = cfg["lambda_ts"], cfg["lambda_ss"]

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        s, t = F.normalize(student.bn_feat, dim=1), F.normalize(teacher.bn_feat, dim=1)
        losses = {"raml_abs": self.weight * ((1 - (s * t).sum(1) + self.eps) ** 2).mean()}
        t_sim = t @ t.t()
        pairs = ~torch.eye(len(t), dtype=torch.bool, device=t.device)  # i ≠ j
        for name, lam, other in (("raml_ts", self.lambda_ts, t), ("raml_ss", self.lambda_ss, s)):
            if lam:
                losses[name] = self.weight * lam * ((s @ other.t() - t_sim + self.eps) ** 2)[pairs].mean()
        return losses
