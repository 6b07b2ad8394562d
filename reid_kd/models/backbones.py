"""Backbones cut into stages, so every stage's feature map can be distilled: torchvision's networks here,
ResNet-IBN-a in `models/ibn.py`, any timm model in `models/timm_backbone.py`.

A backbone here is an `nn.ModuleList` of stages plus its output width. ResNets use the last-stride-1
trick (the last stage keeps its resolution, as the re-ID bag of tricks does); MobileNets take the
same option on their last downsampling block. Where the first weights come from: `models/weights.py`.
"""
from __future__ import annotations

import torchvision
from torch import nn

from reid_kd.models.catalog import BACKBONES
from reid_kd.models.timm_backbone import timm_features
from reid_kd.models.weights import HEAD_KEYS, Start, load_into


def resnet(name: str, last_stride: int) -> tuple[nn.ModuleList, nn.Module]:
    return resnet_stages(getattr(torchvision.models, name)(weights=None), last_stride)


def resnet_stages(net: nn.Module, last_stride: int) -> tuple[nn.ModuleList, nn.Module]:
    """A torchvision-layout ResNet cut into four stages (the stem joins layer1), last stride applied."""
    if last_stride != 2:
        block = net.layer4[0]
        (block.conv2 if hasattr(block, "conv3") else block.conv1).stride = (last_stride, last_stride)
        block.downsample[0].stride = (last_stride, last_stride)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
    return nn.ModuleList([stem, net.layer2, net.layer3, net.layer4]), net


def mobilenet(name: str, last_stride: int) -> tuple[nn.ModuleList, nn.Module]:
    net = getattr(torchvision.models, name)(weights=None)
    for m in net.modules():  # torchvision's 0.01 suits ImageNet-length schedules, not short re-ID ones
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    feats = net.features
    # a stage ends where the next block halves the resolution
    cuts = [i for i, block in enumerate(feats) if i > 0 and _block_stride(block) == 2]
    bounds = [0] + cuts[-3:] + [len(feats)]  # four stages at strides 4, 8, 16, 32
    if last_stride != 2:  # the same trick as for ResNets: the last stage keeps its input resolution
        for m in feats[cuts[-1]].modules():
            if isinstance(m, nn.Conv2d) and m.stride[0] == 2:
                m.stride = (last_stride, last_stride)
    stages = [nn.Sequential(*feats[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    return nn.ModuleList(stages), net


def _block_stride(block: nn.Module) -> int:
    return max((m.stride[0] for m in block.modules() if isinstance(m, nn.Conv2d)), default=1)


def torchvision_net(name: str, last_stride: int = 1) -> tuple[nn.ModuleList, nn.Module]:
    """A network and its stages (which share its modules, so loading one fills the other)."""
    return BACKBONES.load(name)(name, last_stride)


def torchvision_state(name: str, stages: nn.ModuleList) -> dict:
    """Trained stages as a state dict of network `name`, head dropped: what `pretrained` files hold."""
    fresh, net = torchvision_net(name)
    fresh.load_state_dict(stages.state_dict())
    return {k: v for k, v in net.state_dict().items() if not k.startswith(HEAD_KEYS)}


def build_backbone(name: str, last_stride: int = 1, start: Start = Start()) -> nn.ModuleList:
    """Stages of a network, started as `start` says (widths and strides: `stage_shapes`)."""
    if name.startswith("timm:") and start.kind == "imagenet":  # timm's own file, loaded through timm's filters
        return timm_features(name, last_stride, start.file)[0]
    stages, net = torchvision_net(name, last_stride)
    if start.file is not None:
        load_into(net, start)  # stages share modules with `net`, so they receive the weights
    return stages


def stage_shapes(name: str, last_stride: int = 1, stages: nn.ModuleList | None = None
                 ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(widths, strides) of a backbone's four stages; the last stage keeps stride 16 at last_stride 1.
    A timm backbone's are read from its built `stages` (timm's `feature_info`)."""
    info = BACKBONES[name].info
    if info["widths"] is None:
        return stages.widths, stages.strides
    strides = info["strides"][:-1] + (info["strides"][-2] * last_stride,)
    return info["widths"], strides
