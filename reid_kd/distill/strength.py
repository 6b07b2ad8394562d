"""How hard a distillation method pulls on the student, relative to the re-ID losses.

A method whose weighted terms send almost no gradient into the student's backbone is inert (its row
measures the baseline); one that sends far more than the ID and triplet losses drowns them. The
ratio of the two gradient norms on the same batch tells which; the tests hold every method's
default inside a window around 1.
"""
from __future__ import annotations

import torch
from torch import nn

from reid_kd.distill.base import Distiller
from reid_kd.losses import reid_losses


def _grad_norm(loss: torch.Tensor, params: list[nn.Parameter]) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum(g.float().pow(2).sum() for g in grads if g is not None)))


def gradient_ratio(distiller: Distiller, student: nn.Module, teacher: nn.Module, images: torch.Tensor,
                   targets: torch.Tensor, indices: torch.Tensor, train_cfg: dict) -> float:
    """‖∇ distillation terms‖ / ‖∇ (ID + triplet)‖ over the student's backbone parameters, one batch.

    The student runs in training mode (as in a training step), the teacher in eval mode; nothing is
    updated but the distiller's own state (a memory advances by this batch, as in training).
    """
    params = [p for p in student.stages.parameters() if p.requires_grad]
    out = student(images)
    with torch.no_grad():
        teacher_out = teacher(images)
    reid = sum(reid_losses(out, targets, train_cfg).values())
    distill = sum(distiller(out, teacher_out, targets, indices).values())
    return _grad_norm(distill, params) / _grad_norm(reid, params)
