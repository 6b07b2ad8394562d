"""The BNNeck re-ID model (Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person Re-ID").

global average pooling -> `global_feat` (triplet loss) -> BatchNorm neck -> `bn_feat` (retrieval
feature) -> bias-free classifier -> `logits` (ID loss). Every stage's feature map is kept in
`feats` so distillers can read any layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from reid_kd.models.backbones import build_backbone, stage_shapes
from reid_kd.models.weights import Start, resolve


@dataclass
class ModelOutput:
    feats: list[torch.Tensor]
    global_feat: torch.Tensor
    bn_feat: torch.Tensor
    logits: torch.Tensor | None

    def float(self) -> ModelOutput:
        """The same output in float32 (a network run under mixed precision gives half-precision tensors)."""
        return ModelOutput([f.float() for f in self.feats], self.global_feat.float(), self.bn_feat.float(),
                           self.logits.float() if self.logits is not None else None)


class ReIDModel(nn.Module):
    def __init__(self, backbone: str, num_classes: int, last_stride: int = 1, neck: str = "bnneck",
                 pretrained: str | Start | None = None):
        """`pretrained`: None (random), "imagenet", a local torchvision state dict, or a resolved `Start`."""
        super().__init__()
        self.backbone_name, self.num_classes = backbone, num_classes
        start = resolve(pretrained, backbone)
        self.start = start.record()  # how it began (kind, weights' name, SHA-256), kept by checkpoints
        self.stages = build_backbone(backbone, last_stride, start)
        self.widths, self.strides = stage_shapes(backbone, last_stride, self.stages)  # known without a forward
        self.feat_dim = self.widths[-1]
        self.pool = nn.AdaptiveAvgPool2d(1)
        if neck == "bnneck":
            self.neck = nn.BatchNorm1d(self.feat_dim)
            self.neck.bias.requires_grad_(False)  # no shift, as in the BNNeck paper
            nn.init.constant_(self.neck.weight, 1.0)
            nn.init.constant_(self.neck.bias, 0.0)
        elif neck == "none":
            self.neck = nn.Identity()
        else:
            raise ValueError(f"unknown neck {neck!r}; use 'bnneck' or 'none'")
        self.classifier = nn.Linear(self.feat_dim, num_classes, bias=False) if num_classes > 0 else None
        if self.classifier is not None:
            nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, images: torch.Tensor) -> ModelOutput:
        feats = []
        x = images
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        global_feat = self.pool(x).flatten(1)
        return ModelOutput(feats, global_feat, *self.head(global_feat))

    def head(self, global_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(bn_feat, logits) of pooled N×C vectors, as `forward` computes them from `global_feat` (UGD runs the
        teacher's head on pooled local features too)."""
        bn_feat = self.neck(global_feat)
        # logits in eval mode too: a frozen teacher runs in eval mode, and KD-style methods need them
        logits = self.classifier(bn_feat) if self.classifier is not None else None
        return bn_feat, logits


def build_model(model_cfg: dict, num_classes: int, start: Start | None = None) -> ReIDModel:
    """The network a `model` / `teacher` config block describes; `start` overrides its `pretrained`."""
    return ReIDModel(model_cfg["backbone"], num_classes, model_cfg["last_stride"], model_cfg["neck"],
                     model_cfg["pretrained"] if start is None else start)
