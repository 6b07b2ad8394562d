"""IRG: Liu et al., "Knowledge Distillation via Instance Relationship Graph", CVPR 2019.

Three terms, all MSE between the teacher's and the student's graphs:
- vertex: the instances themselves, here the ID logits (same classes for both networks);
- edge: per layer in `edge_layers` (0..3 pooled stage maps, 4 the embedding), the B×B squared
  Euclidean distance matrix of the pooled features, each divided by its maximum;
- transformation: per stage in `transform_stages`, per instance the squared Euclidean distance
  between the feature map of the stage's first block and of its last block (the stage output),
  divided by the batch maximum - a B-vector per stage.
Default weights vertex 0.1, edge 5.0, transformation 5.0: the values of the public PyTorch port
of the official (Caffe) release in Knowledge-Distillation-Zoo (its `--w_irg_vert/edge/tran`
defaults); we did not re-derive them from the Caffe solver files.
Our choices: the "first block" of a stage is the first block whose output already has the stage
output's shape (for ResNets the stage's first block; in MobileNetV3 stages that widen midway, the
first block at the final width), read with a forward hook; `edge_layers = [4]` (the embedding) and
`transform_stages = [1, 2, 3]` (the stages after the stem) by default; each term averages its layers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid_kd.config import Choice, Typed
from reid_kd.distill.common import check_layers, layer_feature
from reid_kd.distill.registry import Distiller, register
from reid_kd.losses import squared_distances
from reid_kd.models.reid_model import ModelOutput


def normalised_distances(feats: torch.Tensor) -> torch.Tensor:
    d = squared_distances(feats.float())
    return d / d.max().clamp_min(1e-12)


def transformation(first: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Per-instance squared distance between two maps of one shape, divided by the batch maximum."""
    d = (last.float() - first.float()).flatten(1).pow(2).sum(1)
    return d / d.max().clamp_min(1e-12)


def first_full_width_block(stage: nn.Module, x: torch.Tensor) -> int:
    """Index of the first block of `stage` whose output has the stage output's shape (x: stage input)."""
    shapes = []
    for block in stage:
        x = block(x)
        shapes.append(x.shape)
    return next(j for j, s in enumerate(shapes) if s == shapes[-1])


class BlockTap:
    """Forward hooks keeping the latest output of one block per stage of a model."""

    def __init__(self, model: nn.Module, stages: list[int]):
        self.outputs: dict[int, torch.Tensor] = {}
        param = next(model.parameters())
        was_training = model.training
        model.eval()
        with torch.no_grad():
            x = torch.zeros(1, 3, 64, 64, device=param.device)
            blocks = {}
            for i, stage in enumerate(model.stages):
                if i in stages:
                    blocks[i] = stage[first_full_width_block(stage, x)]
                x = stage(x)
        model.train(was_training)
        self.handles = [blocks[i].register_forward_hook(self._keep(i)) for i in stages]

    def _keep(self, i: int):
        def hook(module, args, output):
            self.outputs[i] = output
        return hook


@register
class IRG(Distiller):
    name = "irg"
    description = "IRG (Liu et al., CVPR 2019): instance vertices, distance edges and in-stage transformations"
    options = {
        "weight_vertex": 0.1,
        "weight_edge": 5.0,
        "weight_transform": 5.0,
        "edge_layers": Typed(list, [4], optional=False, item=int),
        "transform_stages": Typed(list, [1, 2, 3], optional=False, item=int),
        "embedding": Choice("global_feat", "bn_feat"),
    }

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: dict):
        super().__init__(student, teacher, cfg)
        self.edge_layers, self.stages = list(cfg["edge_layers"]), list(cfg["transform_stages"])
        check_layers(self.edge_layers)
        if any(not 0 <= i <= 3 for i in self.stages):
            raise ValueError("distill.irg.transform_stages must be stage indices in 0..3")
        self.w_v, self.w_e, self.w_t = cfg["weight_vertex"], cfg["weight_edge"], cfg["weight_transform"]
        self.embedding = cfg["embedding"]
        # taps, not submodules: the models are not part of the distiller's state
        self._taps = (BlockTap(student, self.stages), BlockTap(teacher, self.stages)) if self.stages else None

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        losses = {"irg_vertex": self.w_v * F.mse_loss(student.logits.float(), teacher.logits.float())}
        edge = [F.mse_loss(normalised_distances(layer_feature(student, i, self.embedding)),
                           normalised_distances(layer_feature(teacher, i, self.embedding))) for i in self.edge_layers]
        losses["irg_edge"] = self.w_e * torch.stack(edge).mean()
        if self._taps is not None:
            tap_s, tap_t = self._taps
            tran = [F.mse_loss(transformation(tap_s.outputs[i], student.feats[i]),
                               transformation(tap_t.outputs[i].detach(), teacher.feats[i])) for i in self.stages]
            losses["irg_transform"] = self.w_t * torch.stack(tran).mean()
        return losses
