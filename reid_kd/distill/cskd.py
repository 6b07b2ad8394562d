"""CSKD: Chen et al., "Improving Knowledge Distillation via Category Structure", ECCV 2020.

Two structures of the batch, each built inside one network (so teacher and student widths may
differ), the student's matched to the teacher's:
- intra-category: each sample's relation to the centre of its own class in the batch (P×K sampling
  guarantees at least two samples per class);
- inter-category: the relations between the class centres (a P×P matrix).
Our reading (configurable): features are the L2-normalised `embedding` (`global_feat` by default);
a class centre is the mean of its normalised samples; a relation is the cosine similarity; both
structures are matched with MSE. Default weights `weight_intra = 1.0`, `weight_inter = 1.0` are ours
(the paper tunes them per task; they are options).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid_kd.config import Choice
from reid_kd.distill.registry import Distiller, register
from reid_kd.models.reid_model import ModelOutput


def category_structure(feats: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B intra relations: cosine of each sample to its class centre, P×P cosines between centres)."""
    f = F.normalize(feats.float(), dim=1)
    classes, inverse = torch.unique(targets, return_inverse=True)
    sums = torch.zeros(len(classes), f.shape[1], device=f.device, dtype=f.dtype).index_add_(0, inverse, f)
    counts = torch.bincount(inverse, minlength=len(classes)).to(f.dtype)
    centres = F.normalize(sums / counts[:, None], dim=1)
    intra = (f * centres[inverse]).sum(1)
    inter = centres @ centres.t()
    return intra, inter


@register
class CSKD(Distiller):
    name = "cskd"
    description = "CSKD (Chen et al., ECCV 2020): intra- and inter-category structure of the batch"
    options = {"weight_intra": 1.0, "weight_inter": 1.0, "embedding": Choice("global_feat", "bn_feat")}

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: dict):
        super().__init__(student, teacher, cfg)
        self.w_intra, self.w_inter, self.embedding = cfg["weight_intra"], cfg["weight_inter"], cfg["embedding"]

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        intra_s, inter_s = category_structure(getattr(student, self.embedding), targets)
        intra_t, inter_t = category_structure(getattr(teacher, self.embedding), targets)
        return {"cskd_intra": self.w_intra * F.mse_loss(intra_s, intra_t),
                "cskd_inter": self.w_inter * F.mse_loss(inter_s, inter_t)}
