"""The BNNeck re-ID model (Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person Re-ID").

global average pooling -> `global_feat` (triplet loss) -> BatchNorm neck -> `bn_feat` (retrieval
feature) -> bias-free classifier -> `logits` (ID loss). Every stage's feature map is kept in
`feats` so distillers can read any layer.

Two options serve asymmetric retrieval (a light student's queries searched in a heavy teacher's gallery):
`embedding_dim` puts a retrieval head of that width in the neck's place, so teacher and student can
share one retrieval width whatever their backbones; `input_size` has the network resize its input
itself, so a student can see smaller images than the teacher everywhere it runs (training, evaluation,
an exported model) from one place.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
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


def embedding_head(in_dim: int, dim: int) -> nn.Sequential:
    """AIR-Distiller's retrieval head (its `ClassBlock` without the classifier): BN, ReLU, bias-free Linear
    to `dim`, BN, initialised as there (Kaiming fan-out for the Linear, BatchNorms at weight 1, bias 0).

    What it gives is `bn_feat`, the retrieval feature the classifier reads; the triplet loss keeps
    `global_feat`, the pooled feature before it, as the reference's trains on `pooled_feat`. Unlike the
    BN neck, its last BatchNorm keeps a trainable bias, as the reference's does.
    """
    head = nn.Sequential(nn.BatchNorm1d(in_dim), nn.ReLU(), nn.Linear(in_dim, dim, bias=False),
                         nn.BatchNorm1d(dim))
    nn.init.kaiming_normal_(head[2].weight, a=0, mode="fan_out")
    for bn in (head[0], head[3]):
        nn.init.constant_(bn.weight, 1.0)
        nn.init.constant_(bn.bias, 0.0)
    return head


def resize_input(images: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """`images` resized to `size` (height, width), bilinear with antialiasing; unchanged when None or already so.

    Antialiased because the resize usually shrinks: plain bilinear reads only the 4 pixels around each
    output pixel, so shrinking by 2 or more drops pixels and aliases fine detail, where antialiasing
    averages every pixel under the output pixel, as an image library's resize of the original would.
    """
    if size is None or tuple(images.shape[-2:]) == size:
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


class ReIDModel(nn.Module):
    def __init__(self, backbone: str, num_classes: int, last_stride: int = 1, neck: str = "bnneck",
                 pretrained: str | Start | None = None, embedding_dim: int | None = None,
                 input_size: tuple[int, int] | list[int] | None = None):
        """`pretrained`: None (random), "imagenet", a local torchvision state dict, or a resolved `Start`.

        `embedding_dim`: None keeps the BN neck; an int puts `embedding_head` of that width in its place.
        `input_size`: (height, width) every input is resized to first (`resize_input`); None: as given.
        """
        super().__init__()
        self.backbone_name, self.num_classes = backbone, num_classes
        self.input_size = tuple(input_size) if input_size is not None else None
        start = resolve(pretrained, backbone)
        self.start = start.record()  # how it began (kind, weights' name, SHA-256), kept by checkpoints
        self.stages = build_backbone(backbone, last_stride, start)
        self.widths, self.strides = stage_shapes(backbone, last_stride, self.stages)  # known without a forward
        self.feat_dim = self.widths[-1]  # the width of `global_feat`
        self.embedding_dim = embedding_dim  # the retrieval head's width, None without one
        self.retrieval_dim = self.feat_dim if embedding_dim is None else embedding_dim  # the width of `bn_feat`
        self.pool = nn.AdaptiveAvgPool2d(1)
        if embedding_dim is not None:
            if neck != "bnneck":
                raise ValueError(f"the retrieval head (embedding_dim {embedding_dim}) replaces the BN neck; "
                                 f"neck {neck!r} has none")
            self.neck = embedding_head(self.feat_dim, embedding_dim)
        elif neck == "bnneck":
            self.neck = nn.BatchNorm1d(self.feat_dim)
            self.neck.bias.requires_grad_(False)  # no shift, as in the BNNeck paper
            nn.init.constant_(self.neck.weight, 1.0)
            nn.init.constant_(self.neck.bias, 0.0)
        elif neck == "none":
            self.neck = nn.Identity()
        else:
            raise ValueError(f"unknown neck {neck!r}; use 'bnneck' or 'none'")
        self.classifier = nn.Linear(self.retrieval_dim, num_classes, bias=False) if num_classes > 0 else None
        if self.classifier is not None:
            nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, images: torch.Tensor) -> ModelOutput:
        feats = []
        x = resize_input(images, self.input_size)
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
    """The network a `model` / `teacher` config block describes; `start` overrides its `pretrained`.

    `embedding_dim` and `input_size` may be absent (a teacher block has no input size; a model file
    saved before they existed has neither): the BN neck and the data's size, as then."""
    return ReIDModel(model_cfg["backbone"], num_classes, model_cfg["last_stride"], model_cfg["neck"],
                     model_cfg["pretrained"] if start is None else start, model_cfg.get("embedding_dim"),
                     model_cfg.get("input_size"))
