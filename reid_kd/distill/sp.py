"""SP: Tung and Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019.

G = row-L2-normalised (F Fᵀ), F the flattened map of `layer` (B × CHW); loss ‖G_s − G_t‖²_F / B².
Defaults: `weight = 3000` (the paper's γ for CIFAR, also RepDistiller's β) and `layer = 3` (the last
stage map, RepDistiller's feat[-2]).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid_kd.distill.base import Distiller
from reid_kd.models.reid_model import ModelOutput


def similarity(f: torch.Tensor) -> torch.Tensor:
    f = f.float().flatten(1)
    return F.normalize(f @ f.t(), dim=1)


class SP(Distiller):
    name = "sp"

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: dict):
        super().__init__(student, teacher, cfg)
        self.weight, self.layer = cfg["weight"], cfg["layer"]

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        g_s, g_t = similarity(student.feats[self.layer]), similarity(teacher.feats[self.layer])
        b = g_s.shape[0]
        return {"sp": self.weight * (g_s - g_t).pow(2).sum() / (b * b)}
