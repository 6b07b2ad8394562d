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
from reid_kd.models.weights import WeightsUnavailableError, require_timm


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
    try:
        net, error = _feature_net(timm, model, kwargs, last_stride)
    except Exception as e:  # timm's load of a weights file that is truncated, empty or another network's
        if weights is None:
            raise
        reason = " ".join(str(e).split())[:160] or type(e).__name__
        raise WeightsUnavailableError(f"{weights} cannot be loaded as timm's {model} weights ({reason}); delete it "
                                      "to have the published ones downloaded again") from None
    if net is None or not isinstance(net, timm.models.FeatureDictNet) or _channels_last(net):
        why = ("its feature maps are N×H×W×C" if net is not None and _channels_last(net) else
               str(error).splitlines()[0][:100] if error is not None else f"timm gives a {type(net).__name__}")
        raise ConfigError(f"timm model {model!r} gives no four N×C×H×W feature maps in order ({why}); use a "
                          "convolutional timm model (resnet*, efficientnet*, mobilenetv3*, convnext*, regnet*)")
    stages, current = [], []
    for key, module in net.items():
        current.append(module)
        if key in net.return_layers:
            stages.append(nn.Sequential(*current))
            current = []
    info = net.feature_info
    return FeatureStages(stages, tuple(info.channels()), tuple(info.reduction())), net


def _feature_net(timm, model: str, kwargs: dict, last_stride: int) -> tuple:
    """(timm's feature network of `model`, or None; the error of the last layout tried). Output stride 16 where
    the model takes it; the wrapper that runs top-level modules in order, flattening nested Sequentials where
    the model's stages are one (EfficientNet's blocks)."""
    error = None
    for stride in ([{"output_stride": 16}] if last_stride == 1 else []) + [{}]:
        for layout in ({"feature_cls": "list"}, {"feature_cfg": {"feature_cls": "list", "flatten_sequential": True}}):
            try:
                return timm.create_model(model, **kwargs, **stride, **layout), None
            except (TypeError, AssertionError, ValueError) as e:
                error = e
    return None, error


def _channels_last(net) -> bool:
    """Feature maps laid out N×H×W×C (timm's transformers, e.g. Swin), which the stages here cannot pool."""
    return str(getattr(net, "output_fmt", "NCHW")).rsplit(".", 1)[-1] != "NCHW"


def fixed_input_size(backbone: str) -> tuple[int, int] | None:
    """(height, width) of the only images a timm model takes (a transformer's patch grid, e.g. Swin's 224×224),
    None for a backbone that takes any size."""
    if not backbone.startswith("timm:"):
        return None
    cfg = require_timm().models.get_pretrained_cfg(backbone.partition(":")[2])
    return tuple(cfg.input_size[1:]) if cfg is not None and cfg.fixed_input_size else None

