"""ROP: Wu et al., "A General Rank Preserving Framework for Asymmetric Image Retrieval", ICLR 2023.

For each sample i the teacher ranks its k nearest batch samples (itself first) by cosine similarity
t_j = t̂_i·t̂_j of L2-normalised retrieval features; the student's similarity to the same samples is the
cross one, s_j = ŝ_i·t̂_j. The teacher's rank order is the indicator matrix I_t[a, b] = σ((t_b − t_a) / 10⁻⁶)
(a step: 1 where b ranks above a, ½ on the diagonal); the student's, I_s[a, b] = σ((s_b − t_a) / τ), places
its similarity to b among the teacher's with the smooth sigmoid at `temperature` τ. Row a of the squared
difference (I_t − I_s)² is weighted by w_a = softmax_a(`rank_weight` · t_a) · a (a = 1..k, its position in
the teacher's ranking). Loss: the sum over a, b, averaged over the batch, divided by k, times `weight`.
At the teacher's output the loss is not 0 (its step against the student's sigmoid); it is 0 there only
as τ reaches the teacher's 10⁻⁶.

Defaults (`reidkd methods` prints their sources): AIR-Distiller (SCY-X/D3still, `distillers/ROP.py`) with its
MSMT17 ResNet-101 → ResNet-18 config: `weight = 0.5`, `top_k = 256`, `temperature = 0.1`,
`rank_weight = 0.2`; the teacher's 10⁻⁶ is its constant. The weight is AIR-Distiller's, not yet checked
against our gradient window or tuned.

Differences from AIR-Distiller's ROP.py:
- batch: it ranks a separate, randomly shuffled distillation batch of 256 images (the student at low, the
  teacher at high resolution); we rank the training P×K batch, both networks seeing the same images at the
  training resolution. A P×K batch holds K − 1 images of each sample's identity among its neighbours;
- `top_k` is capped at the batch (its 256 was its whole distillation batch; a `top_k` above the batch
  fails there);
- the feature: our `bn_feat` (after the BN neck, or the retrieval embedding head where the model has one)
  for its `retrieval_feat` (its BN-ReLU-Linear-BN head's output); both networks' must have one width;
- float32 where it computes the similarities in float64; the top-k by `topk` where it sorts whole rows;
- the paper ranks a gallery of the whole training set embedded offline by the teacher; AIR-Distiller uses
  the batch instead (its note: better in its experiments), and so do we.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid_kd.distill.base import Distiller
from reid_kd.distill.common import teacher_neighbours
from reid_kd.models.reid_model import ModelOutput

TEACHER_TEMPERATURE = 1e-6  # the teacher's indicator: a step


class ROP(Distiller):
    name = "rop"
    same_width = True

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: dict):
        super().__init__(student, teacher, cfg)
        self.weight, self.k = cfg["weight"], cfg["top_k"]
        self.temperature, self.rank_weight = cfg["temperature"], cfg["rank_weight"]

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        s_top, t_top = teacher_neighbours(student.bn_feat, teacher.bn_feat, self.k)
        k = t_top.shape[1]
        anchor = t_top.unsqueeze(2)  # [i, a, b] = t_a
        i_t = torch.sigmoid((t_top.unsqueeze(1) - anchor) / TEACHER_TEMPERATURE)  # [i, a, b] = σ((t_b − t_a) / 1e-6)
        i_s = torch.sigmoid((s_top.unsqueeze(1) - anchor) / self.temperature)
        position = torch.arange(1, k + 1, dtype=t_top.dtype, device=t_top.device)
        w = F.softmax(self.rank_weight * t_top, dim=1) * position
        loss = ((i_t - i_s) ** 2 * w.unsqueeze(2)).sum(dim=(1, 2)).mean() / k
        return {"rop": self.weight * loss}
