"""The Registry class: lookups with did-you-mean, lazily imported targets, and the static facts entries
carry (a backbone's stage widths must be the built network's)."""
from __future__ import annotations

import pytest
import torch

from reid_kd.distill.common import model_widths
from reid_kd.engine.configs import load_config
from reid_kd.errors import ConfigError
from reid_kd.models.backbones import build_backbone, stage_shapes
from reid_kd.models.catalog import BACKBONES
from reid_kd.models.reid_model import ReIDModel
from reid_kd.registry import Registry, UnknownNameError, default_values
from reid_kd.schema import Num


def test_a_miss_names_the_closest_entry_and_lists_them_all():
    registry = Registry("widget")
    registry.add("sprocket", "math:sqrt", "a wheel with teeth", options={"teeth": Num(12, 3)})
    registry.add("gear", "math:floor")
    with pytest.raises(UnknownNameError, match=r"unknown widget 'sprockett' \(did you mean 'sprocket'\?\); "
                                               r"registered: gear, sprocket"):
        registry["sprockett"]
    with pytest.raises(UnknownNameError, match=r"unknown widget 'zzz'; registered: gear, sprocket"):
        registry["zzz"]
    with pytest.raises(ValueError, match="registered twice"):
        registry.add("gear")
    assert registry["sprocket"](16.0) == 4.0 and list(registry) == ["gear", "sprocket"]
    assert default_values(registry["sprocket"]) == {"teeth": 12}


def test_option_bounds_are_told_by_the_config_with_the_key():
    with pytest.raises(ConfigError, match=r"'distill\.crd\.nce_m' must be between 0\.0 and 0\.999, got 1\.0"):
        load_config(None, ["distill.method=crd", "distill.crd.nce_m=1.0"])
    with pytest.raises(ConfigError, match=r"'distill\.at\.layers' must hold numbers between 0 and 3, got 4"):
        load_config(None, ["distill.method=at", "distill.at.layers=[0, 4]"])
    with pytest.raises(ConfigError, match=r"'distill\.method': unknown distillation method 'gidr' "
                                          r"\(did you mean 'gird'\?\)"):
        load_config(None, ["distill.method=gidr"])


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large"])
@pytest.mark.parametrize("last_stride", [1, 2])
def test_backbone_widths_and_strides_are_those_of_the_built_network(name, last_stride):
    stages = build_backbone(name, last_stride).eval()
    x, shapes = torch.zeros(1, 3, 64, 64), []
    with torch.no_grad():
        for stage in stages:
            x = stage(x)
            shapes.append((x.shape[1], 64 // x.shape[2]))
    widths, strides = stage_shapes(name, last_stride)
    assert shapes == list(zip(widths, strides))
    model = ReIDModel(name, 3, last_stride)
    assert model_widths(model) == (list(BACKBONES[name].info["widths"]), widths[-1]) and model.feat_dim == widths[-1]
