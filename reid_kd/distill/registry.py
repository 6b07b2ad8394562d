"""The Distiller interface and the registry of distillation methods.

A distiller turns (student output, teacher output, targets) into named, already weighted loss
terms. Learnable parts (regressors, projections) are returned by `extra_parameters()` so the
optimizer trains them with the student; state that must survive a resume (memories, queues) lives
in buffers, so it travels in the checkpoint with `state_dict()`.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from reid_kd.models.reid_model import ModelOutput


class Distiller(nn.Module):
    name: ClassVar[str]
    description: ClassVar[str]
    options: ClassVar[dict[str, Any]] = {}  # config schema of `distill.<name>`: defaults, typed

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: dict[str, Any]):
        super().__init__()
        self.cfg = cfg

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def __call__(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """`forward` on a detached teacher output: no loss can send a gradient into the teacher."""
        return super().__call__(student, detach_output(teacher), targets)

    def extra_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def detach_output(out: ModelOutput) -> ModelOutput:
    return ModelOutput([f.detach() for f in out.feats], out.global_feat.detach(), out.bn_feat.detach(),
                       out.logits.detach() if out.logits is not None else None)


DISTILLERS: dict[str, type[Distiller]] = {}


def register(cls: type[Distiller]) -> type[Distiller]:
    if cls.name in DISTILLERS:
        raise ValueError(f"distiller {cls.name!r} registered twice")
    DISTILLERS[cls.name] = cls
    return cls


def describe_methods() -> list[tuple[str, str]]:
    """(name, one-line description) of every registered method, sorted by name."""
    import reid_kd.distill  # noqa: F401  (importing the package registers every method)

    return [(name, DISTILLERS[name].description) for name in sorted(DISTILLERS)]


def build_distiller(distill_cfg: dict[str, Any], student: nn.Module, teacher: nn.Module) -> Distiller | None:
    method = distill_cfg["method"]
    if method == "none":
        return None
    if method not in DISTILLERS:
        raise ValueError(f"unknown distillation method {method!r}; registered: {sorted(DISTILLERS)}")
    return DISTILLERS[method](student, teacher, distill_cfg[method])
