"""CSKD: Chen et al., "Improving Knowledge Distillation via Category Structure", ECCV 2020.

The category structure of a batch, built inside each network and the student's matched to the
teacher's, as the authors' code computes it (xeanzheng/CSKD, `train_cifar.py`, `use_filter = True`):
- features: the last stage's map, the student's brought to the teacher's width by a learned
  bias-free 1×1 convolution (the code's `branch4`, Kaiming-normal initialised); when the maps' H×W
  differ the student's is resized bilinearly to the teacher's first (ours: the CIFAR pairs share H×W);
- intra-category structure: each sample's *offset* from its class centre, f_i − c_{y_i}, matched by
  MSE with the student's centre detached. Feature centres average only the samples the network
  itself classifies correctly (a class with none gives its samples a zero offset); the MSE is
  divided by C·H·W of the teacher's map. The same offsets are matched on the ID logits, there from
  centres of all samples (the code overwrites its filtered logit centres) and divided by the number
  of classes. A centre pull, MSE(z_i, c_{y_i}) with the centre detached, draws the student's logits
  to their class mean;
- inter-category structure: the cosine matrix between the class means (all samples) of the *raw*
  flattened maps, and the same between the logits' class means, each matched by MSE divided by the
  number of classes in the batch.
Defaults: the authors' code weighs the offset terms 0.002, the pull 0.1 and the cosine terms 0.04
(beside cross-entropy at 0.9, for CIFAR). At those weights the CSKD terms sent only 0.02-0.08× the
re-ID loss's gradient into the backbone of the quickstart student (and under 0.05× in the gradient
window test): inert. Ours: the authors' proportions ×10, `weight_intra = 0.02`, `weight_pull = 1.0`,
`weight_inter = 0.4`. `correct_only = true` is the authors' `use_filter`. Their code also adds a
logit MSE at 1e-5 (`loss_KD`), which is not CSKD and is left out.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid_kd.distill.base import Distiller
from reid_kd.distill.common import matching_map, model_widths
from reid_kd.models.reid_model import ModelOutput


def class_centres(x: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(each row's class centre, the B' class centres) of N×D rows; with `keep`, centres average only
    the kept rows, and a row whose class keeps none is its own centre (a zero offset)."""
    classes, inverse = torch.unique(targets, return_inverse=True)
    w = torch.ones(len(x), device=x.device, dtype=x.dtype) if keep is None else keep.to(x.dtype)
    sums = torch.zeros(len(classes), x.shape[1], device=x.device, dtype=x.dtype).index_add_(0, inverse, x * w[:, None])
    counts = torch.zeros(len(classes), device=x.device, dtype=x.dtype).index_add_(0, inverse, w)
    centres = sums / counts.clamp_min(1)[:, None]
    per_row = torch.where(counts[inverse, None] > 0, centres[inverse], x)
    return per_row, centres


def cosine_matrix(x: torch.Tensor) -> torch.Tensor:
    x = F.normalize(x, dim=1)
    return x @ x.t()


class CSKD(Distiller):
    name = "cskd"

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: dict):
        super().__init__(student, teacher, cfg)
        self.w_intra, self.w_pull, self.w_inter = cfg["weight_intra"], cfg["weight_pull"], cfg["weight_inter"]
        self.correct_only = cfg["correct_only"]
        c_s, c_t = model_widths(student)[0][-1], model_widths(teacher)[0][-1]
        self.adapter = nn.Conv2d(c_s, c_t, 1, bias=False)
        nn.init.kaiming_normal_(self.adapter.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        t_map = teacher.feats[-1].float()
        f_t = t_map.flatten(1)
        f_s = self.adapter(matching_map(student.feats[-1], t_map).float()).flatten(1)
        z_s, z_t = student.logits.float(), teacher.logits.float()
        (c_fs, means_fs), (c_ft, means_ft) = class_centres(f_s, targets), class_centres(f_t, targets)
        (c_zs, means_zs), (c_zt, means_zt) = class_centres(z_s, targets), class_centres(z_t, targets)
        if self.correct_only:  # the offsets' feature centres: each network's correctly classified samples
            c_fs, _ = class_centres(f_s, targets, z_s.argmax(1) == targets)
            c_ft, _ = class_centres(f_t, targets, z_t.argmax(1) == targets)

        intra = (F.mse_loss(f_s - c_fs.detach(), f_t - c_ft) / f_t.shape[1]
                 + F.mse_loss(z_s - c_zs.detach(), z_t - c_zt) / z_t.shape[1])
        pull = F.mse_loss(z_s, c_zs.detach())
        n_classes = means_ft.shape[0]
        inter = (F.mse_loss(cosine_matrix(means_fs), cosine_matrix(means_ft))
                 + F.mse_loss(cosine_matrix(means_zs), cosine_matrix(means_zt))) / n_classes
        return {"cskd_intra": self.w_intra * intra, "cskd_pull": self.w_pull * pull,
                "cskd_inter": self.w_inter * inter}
