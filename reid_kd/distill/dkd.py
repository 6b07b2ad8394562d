"""DKD: Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022.

KD split into target-class KD (TCKD: KL of the binary [p_target, 1 − p_target] distributions) and
non-target-class KD (NCKD: KL of the distributions over the non-target classes), each at
temperature T and scaled by T²: loss = α·TCKD + β·NCKD, averaged over the batch. Defaults: `alpha = 1`,
`beta = 8`, `temperature = 4` (mdistiller's CIFAR-100 settings). mdistiller ramps the loss in
linearly over 20 epochs; the ramp here counts optimisation steps (`warmup_steps`, 0 = off by
default, our choice since epochs differ by dataset), with the step counter kept in a buffer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid_kd.distill.base import Distiller
from reid_kd.models.reid_model import ModelOutput


def dkd_terms(s: torch.Tensor, t: torch.Tensor, targets: torch.Tensor, temperature: float
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD), each batch-mean KL(teacher ‖ student) times T²."""
    s, t = s.float() / temperature, t.float() / temperature
    gt = F.one_hot(targets, s.shape[1]).bool()
    p_s, p_t = F.softmax(s, 1), F.softmax(t, 1)
    b_s = torch.stack([p_s[gt], 1 - p_s[gt]], 1).clamp_min(1e-12)
    b_t = torch.stack([p_t[gt], 1 - p_t[gt]], 1).clamp_min(1e-12)
    tckd = (b_t * (b_t.log() - b_s.log())).sum(1).mean()
    log_q_s = F.log_softmax(s.masked_fill(gt, float("-inf")), 1).masked_fill(gt, 0.0)
    log_q_t = F.log_softmax(t.masked_fill(gt, float("-inf")), 1).masked_fill(gt, 0.0)
    nckd = (log_q_t.exp() * (log_q_t - log_q_s)).sum(1).mean()
    return tckd * temperature ** 2, nckd * temperature ** 2


class DKD(Distiller):
    name = "dkd"

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: dict):
        super().__init__(student, teacher, cfg)
        self.alpha, self.beta, self.temperature = cfg["alpha"], cfg["beta"], cfg["temperature"]
        self.warmup = cfg["warmup_steps"]
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        tckd, nckd = dkd_terms(student.logits, teacher.logits, targets, self.temperature)
        ramp = min((int(self.step) + 1) / self.warmup, 1.0) if self.warmup > 0 else 1.0
        if self.training:
            self.step += 1
        return {"dkd_tckd": ramp * self.alpha * tckd, "dkd_nckd": ramp * self.beta * nckd}
