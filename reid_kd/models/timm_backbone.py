"""Any timm model as a backbone (`timm:<name>`, the optional `timm` extra), through `features_only`.

timm's feature wrapper runs the model's top-level modules in order and keeps the outputs of its feature
levels; here those modules are grouped into four stages ending at the last four levels (strides 4-32),
so a timm backbone is a ModuleList of stages like every other. Widths and strides come from timm's
`feature_info`, not from a dummy forward. `last_stride` 1 asks timm for output stride 16 (the last stage
dilated instead of downsampled) where the model takes it; others keep stride 32, as `feature_info` says.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from reid_kd.errors import ConfigError, did_you_mean
from reid_kd.models.weights import require_timm


class FeatureStages(nn.ModuleList):
    """Stages whose widths and strides were read from the network they were cut from."""

    def __init__(self, stages: list[nn.Module], widths: tuple[int, ...], strides: tuple[int, ...]):
        super().__init__(stages)
        self.widths, self.strides = widths, strides


def timm_features(name: str, last_stride: int = 1, weights: Path | None = None) -> tuple[FeatureStages, nn.Module]:
    """The stages of timm model `timm:<model>` and the feature network they share modules with; `weights`:
    a file of timm's own pretrained weights (loaded as timm loads them, its key filters applied)."""
    timm = require_timm()
    model = name.partition(":")[2]
    if not timm.is_model(model):
        raise ConfigError(f"unknown timm model {model!r}{did_you_mean(model, timm.list_models())}")
    kwargs = {"features_only": True, "out_indices": (-4, -3, -2, -1)}
    if weights is not None:
        kwargs |= {"pretrained": True, "pretrained_cfg_overlay": {"file": str(weights)}}
    net, error = None, None
    # output stride 16 where the model takes it; the wrapper that runs top-level modules in order, flattening
    # nested Sequentials where the model's stages are one (EfficientNet's blocks)
    for stride in ([{"output_stride": 16}] if last_stride == 1 else []) + [{}]:
        for layout in ({"feature_cls": "list"}, {"feature_cfg": {"feature_cls": "list", "flatten_sequential": True}}):
            try:
                net = timm.create_model(model, **kwargs, **stride, **layout)
                break
            except (TypeError, AssertionError, ValueError) as e:
                error = e
        if net is not None:
            break
    if net is None or not isinstance(net, timm.models.FeatureDictNet):
        raise ConfigError(f"timm model {model!r} gives no four N×C×H×W feature maps in order "
                          f"({str(error).splitlines()[0][:100]}); use a convolutional timm model "
                          "(resnet*, efficientnet*, mobilenetv3*, convnext*, regnet*)")
    stages, current = [], []
    for key, module in net.items():
        current.append(module)
        if key in net.return_layers:
            stages.append(nn.Sequential(*current))
            current = []
    info = net.feature_info
    return FeatureStages(stages, tuple(info.channels()), tuple(info.reduction())), net

