"""FitNet: Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015.

The student's hint-layer map passes through a learned regressor to the teacher's width and is
matched to the teacher's map with MSE. The regressor is a 3×3 convolution + BatchNorm + ReLU (as in
RepDistiller's `ConvReg`); when the maps' H×W differ the student map is first resized bilinearly
to the teacher's (our choice). Defaults: `hint_layer = 2` (stage 3, the middle of the hierarchy; our
choice for 4-stage backbones) and `weight = 10` (ours): RepDistiller's β = 100 made the hint send
12-14× the re-ID loss's gradient into the student's backbone at the quickstart scale and 17-26× in
the gradient window test's state, past the window's bound of 20 (the MSE is on raw, unnormalised
maps, so its scale follows the teacher's activations). At 10 it sends about 1-2.5×.
Training is single-stage, as in RepDistiller: the hint loss is added to the re-ID losses from the
first step. The paper's first stage (training the student up to the guided layer on the hint alone,
then the whole student with KD) is not run.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid_kd.distill.base import Distiller
from reid_kd.distill.common import matching_map, model_widths
from reid_kd.models.reid_model import ModelOutput


class FitNet(Distiller):
    name = "fitnet"

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: dict):
        super().__init__(student, teacher, cfg)
        self.weight, self.layer = cfg["weight"], cfg["hint_layer"]
        c_s, c_t = model_widths(student)[0][self.layer], model_widths(teacher)[0][self.layer]
        self.regressor = nn.Sequential(nn.Conv2d(c_s, c_t, 3, padding=1, bias=False), nn.BatchNorm2d(c_t),
                                       nn.ReLU(inplace=True))

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        t = teacher.feats[self.layer]
        s = self.regressor(matching_map(student.feats[self.layer], t))
        return {"fitnet": self.weight * F.mse_loss(s.float(), t.float())}
