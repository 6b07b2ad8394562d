"""IRG: Liu et al., "Knowledge Distillation via Instance Relationship Graph", CVPR 2019.

Three terms between the teacher's and the student's graphs:
- vertex: the instances themselves, here the ID logits (same classes for both networks), MSE;
- edge: per layer in `edge_layers` (0..3 pooled stage maps, 4 the embedding), the B×B squared
  Euclidean distance matrix of the pooled features, each divided by its maximum;
- transformation: per stage in `transform_stages`, per instance the squared Euclidean distance
  between the globally pooled output of the stage's first block and of its last block (the stage
  output), divided by the batch maximum - a B-vector per stage.
Edge and transformation terms use the official Caffe release's loss (yufanLIU/IRG: `EuclideanLoss`,
sum of squared differences over 2·num: Σ/(2B) for a B×B map, Σ/2 for a B-vector), one loss per
layer, summed. Defaults: no vertex loss, as the release; 0.05 on every edge and transformation loss,
ours: the release's 0.005 made these terms send 0.17-0.25× the re-ID loss's gradient into the
student's backbone at the quickstart scale but only 0.01-0.04× in the gradient window test's
earlier-training state, below its bound of 0.05; ×10 keeps the release's proportions. Set
`weight_vertex` to add the paper's vertex term (the Knowledge-Distillation-Zoo PyTorch port uses
0.1 / 5 / 5 on mean-squared errors).
Our choices: the "first block" of a stage is the first block whose output already has the stage
output's shape (for ResNets the stage's first block; in MobileNetV3 stages that widen midway, the
first block at the final width), read with a forward hook; `edge_layers = [4]` (the embedding, as
the release's last pooled layer) and `transform_stages = [1, 2, 3]` (the stages after the stem).
The release's map layer back-propagates only half of the symmetric gradient; autograd here gives the
full one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid_kd.distill.base import Distiller
from reid_kd.distill.common import check_layers, layer_feature
from reid_kd.losses import squared_distances
from reid_kd.models.reid_model import ModelOutput


def normalised_distances(feats: torch.Tensor) -> torch.Tensor:
    d = squared_distances(feats.float())
    return d / d.max().clamp_min(1e-12)


def transformation(first: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Per-instance squared distance between two maps' pooled features, divided by the batch maximum."""
    d = (F.adaptive_avg_pool2d(last.float(), 1) - F.adaptive_avg_pool2d(first.float(), 1)).flatten(1).pow(2).sum(1)
    return d / d.max().clamp_min(1e-12)


def euclidean_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Caffe's EuclideanLoss: the sum of squared differences over 2·num (num: a map's rows, 1 for a vector)."""
    return (a - b).pow(2).sum() / (2 * (a.shape[0] if a.dim() > 1 else 1))


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


class IRG(Distiller):
    name = "irg"

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: dict):
        super().__init__(student, teacher, cfg)
        self.edge_layers, self.stages = list(cfg["edge_layers"]), list(cfg["transform_stages"])
        check_layers("distill.irg.edge_layers", self.edge_layers, cfg["embedding"], student, teacher)
        self.w_v, self.w_e, self.w_t = cfg["weight_vertex"], cfg["weight_edge"], cfg["weight_transform"]
        self.embedding = cfg["embedding"]
        # taps, not submodules: the models are not part of the distiller's state
        self._taps = (BlockTap(student, self.stages), BlockTap(teacher, self.stages)) if self.stages else None

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        losses = {}
        if self.w_v:
            losses["irg_vertex"] = self.w_v * F.mse_loss(student.logits.float(), teacher.logits.float())
        edge = [euclidean_loss(normalised_distances(layer_feature(student, i, self.embedding)),
                               normalised_distances(layer_feature(teacher, i, self.embedding)))
                for i in self.edge_layers]
        losses["irg_edge"] = self.w_e * torch.stack(edge).sum()
        if self._taps is not None:
            tap_s, tap_t = self._taps
            tran = [euclidean_loss(transformation(tap_s.outputs[i], student.feats[i]),
                                   transformation(tap_t.outputs[i].detach(), teacher.feats[i])) for i in self.stages]
            losses["irg_transform"] = self.w_t * torch.stack(tran).sum()
        return losses
