"""CSD: Wu et al., "Contextual Similarity Distillation for Asymmetric Image Retrieval", CVPR 2022.

The teacher ranks, for each sample, the batch by the cosine similarity of its retrieval feature to theirs;
the student keeps that context: over the sample's k nearest samples by the teacher (itself first), the
softmax of the student's similarities to the teacher's vectors, ŝ_i·t̂_j at `student_temperature`, follows
the softmax of the teacher's own, t̂_i·t̂_j at the much sharper `teacher_temperature`. Loss: KL(teacher ‖
student) summed over the k neighbours, averaged over the batch, times `weight` (no T² factor).

Defaults (`reidkd methods` prints their sources): AIR-Distiller (SCY-X/D3still, the D3still authors' library,
`distillers/CSD.py`) with its MSMT17 ResNet-101 → ResNet-18 config:
`weight = 5`, `top_k = 256`, temperatures 1 (student) and 0.01 (teacher). The weight is AIR-Distiller's,
not yet checked against our gradient window or tuned.

Differences from AIR-Distiller's CSD.py:
- batch: it relates a separate, randomly shuffled distillation batch of 256 images (the student at low,
  the teacher at high resolution); we relate the training P×K batch, both networks seeing the same images
  at the training resolution. A P×K batch holds K − 1 images of each sample's identity, so the teacher's
  nearest neighbours are mostly positives, where a random batch of 256 from many identities holds few;
- `top_k` is capped at the batch (its 256 was its whole distillation batch: with ours, every column);
- the feature: our `bn_feat` (after the BN neck, or the retrieval embedding head where the model has one)
  for its `retrieval_feat` (its BN-ReLU-Linear-BN head's output); both networks' must have one width;
- float32 where it computes the similarities in float64; the top-k by `topk` where it sorts whole rows
  (the same neighbours; among exact ties, possibly another order);
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


class CSD(Distiller):
    name = "csd"
    same_width = True

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: dict):
        super().__init__(student, teacher, cfg)
        self.weight, self.k = cfg["weight"], cfg["top_k"]
        self.t_student, self.t_teacher = cfg["student_temperature"], cfg["teacher_temperature"]

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        s_top, t_top = teacher_neighbours(student.bn_feat, teacher.bn_feat, self.k)
        log_p_s = F.log_softmax(s_top / self.t_student, dim=1)
        log_p_t = F.log_softmax(t_top / self.t_teacher, dim=1)
        return {"csd": self.weight * F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)}
