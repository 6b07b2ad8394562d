"""ResNet-IBN-a (Pan et al., "Two at Once: Enhancing Learning and Generalization Capacities via IBN-Net",
ECCV 2018), the backbone of fast-reid's strongest re-ID baselines.

A torchvision ResNet whose blocks in stages 1-3 normalise the first convolution's output with `IBN`:
instance norm (affine) on the first half of the channels, batch norm on the rest; stage 4 is unchanged.
Module names follow the IBN-Net release (`layer1.0.bn1.IN.weight`, `layer1.0.bn1.BN.running_mean`),
so its ImageNet state dicts load as they are.
"""
from __future__ import annotations

import torch
import torchvision
from torch import nn

from reid_kd.models.backbones import resnet_stages


class IBN(nn.Module):
    """Instance norm on the first `int(channels * ratio)` channels, batch norm on the others."""

    def __init__(self, channels: int, ratio: float = 0.5):
        super().__init__()
        self.half = int(channels * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(channels - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, rest = x.split([self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(first.contiguous()), self.BN(rest.contiguous())], dim=1)


def resnet_ibn_a(name: str, last_stride: int) -> tuple[nn.ModuleList, nn.Module]:
    """`resnet50_ibn_a` etc.: torchvision's `resnet50` with IBN in the blocks of layer1-layer3."""
    net = getattr(torchvision.models, name.removesuffix("_ibn_a"))(weights=None)
    for layer in (net.layer1, net.layer2, net.layer3):
        for block in layer:
            block.bn1 = IBN(block.bn1.num_features)
    return resnet_stages(net, last_stride)
