"""SP: Tung and Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019.

G = row-L2-normalised (F Fᵀ), F the flattened map of `layer` (B × CHW); loss ‖G_s − G_t‖²_F / B².
Defaults: `weight = 3000` (the paper's γ for CIFAR, also RepDistiller's β) and `layer = 3` (the last
stage map, RepDistiller's feat[-2]).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid_kd.distill.registry import Distiller, register
from reid_kd.models.reid_model import ModelOutput


def similarity(f: torch.Tensor) -> torch.Tensor:
    f = f.float().flatten(1)
    return F.normalize(f @ f.t(), dim=1)


@register
class SP(Distiller):
    name = "sp"
    description = "SP (Tung & Mori, ICCV 2019): row-normalised batch similarity of a stage map"
    options = {"weight": 3000.0, "layer": 3}
    sources = {"weight": "paper's γ for CIFAR, also RepDistiller's β (3000)",
               "layer": "RepDistiller (the last stage map, feat[-2])"}

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: dict):
        super().__init__(student, teacher, cfg)
        self.weight, self.layer = cfg["weight"], cfg["layer"]
        if not 0 <= self.layer <= 3:
            raise ValueError("distill.sp.layer must be a stage index in 0..3")

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        g_s, g_t = similarity(student.feats[self.layer]), similarity(teacher.feats[self.layer])
        b = g_s.shape[0]
        return {"sp": self.weight * (g_s - g_t).pow(2).sum() / (b * b)}
