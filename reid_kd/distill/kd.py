"""KD: Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network", NIPS DL Workshop 2015.

Loss: KL(softmax(z_t / T) ‖ softmax(z_s / T)) · T², averaged over the batch, on the ID logits.
Defaults: `temperature = 4` (the value RepDistiller and mdistiller use as their KD default) and
`weight = 1.0`; RepDistiller pairs KD at 0.9 with cross-entropy at 0.1, but here the re-ID recipe
keeps its ID and triplet losses at full weight, so the KD term enters at 1.0 (our choice).
"""
from __future__ import annotations

import torch
from torch import nn

from reid_kd.distill.base import Distiller
from reid_kd.distill.common import kl_soft
from reid_kd.models.reid_model import ModelOutput


class KD(Distiller):
    name = "kd"

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: dict):
        super().__init__(student, teacher, cfg)
        self.weight, self.temperature = cfg["weight"], cfg["temperature"]

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"kd": self.weight * kl_soft(student.logits.float(), teacher.logits.float(), self.temperature)}
