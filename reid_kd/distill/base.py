"""The Distiller interface, and building the configured one (the registry: `distill/catalog.py`).

A distiller turns (student output, teacher output, targets) into named, already weighted loss
terms. Learnable parts (regressors, projections) are returned by `extra_parameters()` so the
optimizer trains them with the student; state that must survive a resume (memories, queues) lives
in buffers, so it travels in the checkpoint with `state_dict()`.

Every option's default names where it comes from in its entry's `sources` (the paper, the authors'
code, a peer implementation, or ours and why); `reidkd methods` prints them. A method that needs to know
which training image each sample is (`per_sample = True`: CRD's slot per image, GIRD's same-image mask)
is built with the training set's labels and called with each batch's dataset indices. A method that
compares the student's retrieval vectors with the teacher's (`same_width = True`: CSD, RAML, ROP, D3still,
UGD) refuses networks whose `bn_feat` widths differ, when built and at every call, in one line naming the fix.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from reid_kd.distill.catalog import DISTILLERS
from reid_kd.distill.common import check_same_width, retrieval_width
from reid_kd.models.reid_model import ModelOutput


class Distiller(nn.Module):
    name: ClassVar[str]  # its entry in DISTILLERS, whose description, options and sources it carries
    description: ClassVar[str]
    options: ClassVar[dict[str, Any]]  # config schema of `distill.<name>`: defaults, types, bounds
    sources: ClassVar[dict[str, str]]  # option -> where its default comes from
    per_sample: ClassVar[bool] = False  # built with the training labels, called with dataset indices
    same_width: ClassVar[bool] = False  # compares student and teacher retrieval vectors directly: equal widths

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name in DISTILLERS:  # a registered method carries its entry (a benchmark's stand-in need not)
            entry = DISTILLERS[cls.name]
            cls.description, cls.options, cls.sources = entry.description, entry.options, entry.sources

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: dict[str, Any]):
        super().__init__()
        self.cfg = cfg
        if self.same_width:
            check_same_width(self.name, retrieval_width(student), retrieval_width(teacher))

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def __call__(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor,
                 indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """`forward` on a detached teacher output: no loss can send a gradient into the teacher. Every method
        computes in float32, outside any autocast region: relations and softmax at a temperature lose too
        much in half precision.

        `indices` (each sample's index in the training set) reach only the per-sample methods.
        """
        if self.per_sample and indices is None:
            raise ValueError(f"{self.name} needs each sample's training-set index: call it with the batch's "
                             "dataset indices")
        if self.same_width:
            check_same_width(self.name, student.bn_feat.shape[1], teacher.bn_feat.shape[1])
        student, teacher = student.float(), detach_output(teacher).float()
        with torch.autocast(student.bn_feat.device.type, enabled=False):
            if not self.per_sample:
                return super().__call__(student, teacher, targets)
            return super().__call__(student, teacher, targets, indices)

    def extra_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def detach_output(out: ModelOutput) -> ModelOutput:
    return ModelOutput([f.detach() for f in out.feats], out.global_feat.detach(), out.bn_feat.detach(),
                       out.logits.detach() if out.logits is not None else None)


def build_distiller(distill_cfg: dict[str, Any], student: nn.Module, teacher: nn.Module,
                    train_targets: torch.Tensor | None = None) -> Distiller | None:
    """The configured method, or None for `method: none`.

    `train_targets`: the label of every training image, by dataset index (per-sample methods need it).
    """
    method = distill_cfg["method"]
    if method == "none":
        return None
    cls = DISTILLERS.load(method)
    if not cls.per_sample:
        return cls(student, teacher, distill_cfg[method])
    if train_targets is None:
        raise ValueError(f"{method} needs each sample's training-set index: build it with the training labels")
    return cls(student, teacher, distill_cfg[method], train_targets)
