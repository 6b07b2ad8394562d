"""AT: Zagoruyko and Komodakis, "Paying More Attention to Attention", ICLR 2017.

Spatial attention of a map: the channel mean of |f|^p (p = 2), flattened and L2-normalised; loss:
mean squared difference of the student's and the teacher's attention, summed over `layers`. When
H×W differ the student's one-channel attention map is resized bilinearly to the teacher's before
normalising (our choice). Defaults: `p = 2` (the paper's), `layers = [0, 1, 2, 3]` (every stage, as
RepDistiller's feat[1:-1]) and `weight = 250` (ours). The paper's β = 10³ (also RepDistiller's, with
the squared difference averaged over positions and samples as here) made the AT term send 10-15×
the re-ID loss's gradient into the student's backbone at the quickstart scale and up to 18× in the
gradient window test's state, against the window's bound of 20: it drowns the ID and triplet losses.
At 250 it sends about 2.5-4×.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid_kd.distill.base import Distiller
from reid_kd.distill.common import matching_map
from reid_kd.models.reid_model import ModelOutput


def attention_map(f: torch.Tensor, p: float) -> torch.Tensor:
    """N×1×H×W channel mean of |f|^p (not yet normalised)."""
    return f.float().abs().pow(p).mean(1, keepdim=True)


class AT(Distiller):
    name = "at"

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: dict):
        super().__init__(student, teacher, cfg)
        self.weight, self.p, self.layers = cfg["weight"], cfg["p"], list(cfg["layers"])
        if not self.layers:  # each index is bounded by the option's schema
            raise ValueError("distill.at.layers must be stage indices in 0..3")

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        total = 0.0
        for i in self.layers:
            a_t = attention_map(teacher.feats[i], self.p)
            a_s = matching_map(attention_map(student.feats[i], self.p), a_t)
            a_s, a_t = F.normalize(a_s.flatten(1), dim=1), F.normalize(a_t.flatten(1), dim=1)
            total = total + (a_s - a_t).pow(2).mean()
        return {"at": self.weight * total}
