"""Backbones beyond torchvision's: ResNet-IBN-a (layout and release weights as the IBN-Net repository
defines them) and any timm model through `features_only` (widths and strides from `feature_info`)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers import into_hub_cache
from torch import nn

from reid_kd.cli import main
from reid_kd.distill.base import build_distiller
from reid_kd.distill.catalog import DISTILLERS
from reid_kd.engine.configs import load_config
from reid_kd.errors import ConfigError, UserError
from reid_kd.models.backbones import build_backbone, stage_shapes, torchvision_net
from reid_kd.models.catalog import BACKBONES
from reid_kd.models.reid_model import ReIDModel
from reid_kd.models.weights import WeightsUnavailableError, imagenet_file, sha256

# The IBN-Net definition (XingangPan/IBN-Net, ibnnet/resnet_ibn.py): blocks per stage, block kind, and
# IBN ('a') in the first normalisation of every block of stages 1-3, instance norm on half its planes.
IBN_NET = {"resnet18_ibn_a": ([2, 2, 2, 2], "basic"), "resnet34_ibn_a": ([3, 4, 6, 3], "basic"),
           "resnet50_ibn_a": ([3, 4, 6, 3], "bottleneck"), "resnet101_ibn_a": ([3, 4, 23, 3], "bottleneck")}
PLANES = (64, 128, 256, 512)
QUICKSTART = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")


def release_keys(name: str) -> list[str]:
    """The state dict keys of the IBN-Net release's file of `name`, written out from its definition."""
    blocks, kind = IBN_NET[name]
    expansion, convs = (1, 2) if kind == "basic" else (4, 3)
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["conv1.weight", *(f"bn1.{k}" for k in bn)]
    inplanes = 64
    for stage, (n, planes) in enumerate(zip(blocks, PLANES)):
        for b in range(n):
            prefix = f"layer{stage + 1}.{b}"
            for c in range(1, convs + 1):
                keys.append(f"{prefix}.conv{c}.weight")
                if c == 1 and stage < 3:
                    keys += [f"{prefix}.bn1.IN.weight", f"{prefix}.bn1.IN.bias", *(f"{prefix}.bn1.BN.{k}" for k in bn)]
                else:
                    keys += [f"{prefix}.bn{c}.{k}" for k in bn]
            if b == 0 and (stage > 0 or inplanes != planes * expansion):
                keys += [f"{prefix}.downsample.0.weight", *(f"{prefix}.downsample.1.{k}" for k in bn)]
            inplanes = planes * expansion
    return keys + ["fc.weight", "fc.bias"]


@pytest.mark.parametrize("name", list(IBN_NET))
def test_ibn_a_layout_is_the_ibn_net_definition(name):
    stages = build_backbone(name)
    blocks, _ = IBN_NET[name]
    for stage, (n, planes) in enumerate(zip(blocks, PLANES)):
        layer = stages[stage][-1] if stage == 0 else stages[stage]  # the stem joins layer1
        ins = [m.num_features for m in layer.modules() if isinstance(m, nn.InstanceNorm2d)]
        assert ins == ([planes // 2] * n if stage < 3 else []), (name, stage)
        assert all(isinstance(block.bn1, nn.BatchNorm2d) != (stage < 3) for block in layer)
    assert stage_shapes(name) == (BACKBONES[name].info["widths"], (4, 8, 16, 16))
    assert sorted(torchvision_net(name)[1].state_dict()) == sorted(release_keys(name))  # the release's names


def seed_release_file(name: str) -> dict:
    """A state dict under the release's keys and file name in torch hub's cache, values random."""
    torch.manual_seed(5)
    shapes = {k: v.shape for k, v in torchvision_net(name)[1].state_dict().items()}  # a KeyError: a key we lack
    return into_hub_cache(name, {k: torch.randn(shapes[k]) if "num_batches" not in k else torch.tensor(7)
                                 for k in release_keys(name)})


def test_the_ibn_net_release_weights_load_from_the_hub_cache(hub):
    state = seed_release_file("resnet18_ibn_a")
    model = ReIDModel("resnet18_ibn_a", 5, pretrained="imagenet")  # load_into: no missing key, or it raises
    block = model.stages[0][4][1]
    assert torch.equal(block.bn1.IN.weight, state["layer1.1.bn1.IN.weight"])
    assert torch.equal(block.bn1.BN.running_var, state["layer1.1.bn1.BN.running_var"])
    assert torch.equal(model.stages[3][0].downsample[0].weight, state["layer4.0.downsample.0.weight"])
    assert model.start == {"kind": "imagenet", "name": "resnet18_ibn_a (IBN-Net v1.0 release)",
                           "file": "resnet18_ibn_a-2f571257.pth", "sha256": sha256(hub / "resnet18_ibn_a-2f571257.pth")}


def test_ibn_weights_offline_and_not_cached_are_one_line(hub):
    with pytest.raises(WeightsUnavailableError) as error:
        ReIDModel("resnet50_ibn_a", 5, pretrained="imagenet")
    message = str(error.value)
    assert "\n" not in message and "resnet50_ibn_a-d9d0bb7b.pth" in message and f"into {hub}/" in message
    assert "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet50_ibn_a-d9d0bb7b.pth" in message


# ---------------------------------------------------------------------------------------------- timm

@pytest.mark.parametrize("name", ["resnet18d", "efficientnet_b0", "convnext_atto", "mobilenetv3_small_100"])
@pytest.mark.parametrize("last_stride", [1, 2])
def test_timm_widths_and_strides_are_those_of_its_feature_maps(name, last_stride):
    pytest.importorskip("timm")
    model = ReIDModel(f"timm:{name}", 3, last_stride).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 64))
    assert [(f.shape[1], 64 // f.shape[2]) for f in out.feats] == list(zip(model.widths, model.strides))
    assert model.strides[:3] == (4, 8, 16) and model.feat_dim == model.widths[-1] == out.global_feat.shape[1]


def test_timm_default_weights_come_from_the_hub_cache(hub):
    timm = pytest.importorskip("timm")
    torch.manual_seed(2)
    state = timm.create_model("resnet18d").state_dict()  # the classifier's keys, as timm publishes them
    into_hub_cache("timm:resnet18d", state)
    file = imagenet_file("timm:resnet18d")
    assert file.name == "resnet18d_ra2-48a79e06.pth"
    model = ReIDModel("timm:resnet18d", 5, pretrained="imagenet")
    assert torch.equal(model.stages[0][0][0].weight, state["conv1.0.weight"])
    assert torch.equal(model.stages[3][-1][1].conv2.weight, state["layer4.1.conv2.weight"])
    assert model.start["name"] == "timm timm/resnet18d.ra2_in1k" and model.start["file"] == file.name
    file.unlink()
    with pytest.raises(WeightsUnavailableError) as error:
        ReIDModel("timm:resnet18d", 5, pretrained="imagenet")
    assert "\n" not in str(error.value) and file.name in str(error.value) and f"into {hub}/" in str(error.value)


def test_unknown_or_unfit_timm_models_and_a_missing_extra_are_one_line(monkeypatch):
    pytest.importorskip("timm")
    with pytest.raises(ConfigError, match="unknown timm model 'resnet18e'.*did you mean"):
        ReIDModel("timm:resnet18e", 3)
    with pytest.raises(ConfigError, match="vit_tiny_patch16_224.*convolutional timm model"):
        ReIDModel("timm:vit_tiny_patch16_224", 3)
    monkeypatch.setitem(sys.modules, "timm", None)  # as if the extra were not installed
    with pytest.raises(UserError, match=r"^timm backbones need the timm extra: pip install -e '\.\[timm\]'$"):
        ReIDModel("timm:resnet18d", 3)


# ------------------------------------------------------------------------------- distillers and runs

@pytest.mark.parametrize("method", DISTILLERS.names())
def test_every_method_distils_an_ibn_teacher_into_a_timm_student(method):
    pytest.importorskip("timm")
    torch.manual_seed(0)
    # a 512-d timm student beside the 512-d teacher where the method compares their retrieval features directly
    timm_student = "timm:resnet18" if DISTILLERS.load(method).same_width else "timm:efficientnet_b0"
    student, teacher = ReIDModel(timm_student, 4), ReIDModel("resnet18_ibn_a", 4).eval()
    targets = torch.arange(4).repeat_interleave(2)
    distiller = build_distiller(load_config(None, [f"distill.method={method}"])["distill"], student, teacher,
                                train_targets=targets)
    images = torch.randn(8, 3, 64, 32)
    with torch.no_grad():
        teacher_out = teacher(images)
    terms = distiller(student(images), teacher_out, targets, torch.arange(8))
    total = sum(terms.values())
    assert terms and torch.isfinite(total)
    total.backward()
    assert student.stages[0][0].weight.grad is not None  # the stem's convolution learns from the method


@pytest.mark.parametrize("method", ["gird", "cskd", "at"])
@pytest.mark.parametrize("student", ["timm:resnet18d", "timm:efficientnet_b0"])
def test_quickstart_runs_with_an_ibn_teacher_and_a_timm_student(method, student, tiny_overrides, tmp_path):
    pytest.importorskip("timm")
    name = f"{method}-{student.replace(':', '-')}"  # the teacher, trained once, is shared by these runs
    overrides = [*tiny_overrides, "teacher.backbone=resnet50_ibn_a", f"model.backbone={student}",
                 f"distill.method={method}", f"experiment.run_name={name}"]
    result = CliRunner().invoke(main, ["run", "--config", QUICKSTART, *[a for o in overrides for a in ("--set", o)]])
    assert result.exit_code == 0, result.output
    cfg = load_config(QUICKSTART, overrides)
    run = Path(cfg["experiment"]["output_dir"]) / "quickstart" / name / "seed0"
    record = json.loads((run / "metrics.json").read_text())
    assert record["teacher_backbone"] == "resnet50_ibn_a" and record["student_backbone"] == student
    assert 0 <= record["mAP"] <= 1


def test_timm_weights_only_on_hugging_face_come_from_its_cache(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    hub = pytest.importorskip("huggingface_hub")
    from safetensors.torch import save_file

    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", True)
    name, repo = "mobilenetv4_conv_small", "models--timm--mobilenetv4_conv_small.e2400_r224_in1k"
    assert not timm.models.get_pretrained_cfg(name).url  # Hugging Face's alone
    with pytest.raises(WeightsUnavailableError) as error:
        ReIDModel(f"timm:{name}", 3, pretrained="imagenet")
    assert "\n" not in str(error.value) and f"into {tmp_path / 'hf' / repo}/" in str(error.value)
    torch.manual_seed(4)
    state = timm.create_model(name).state_dict()
    snapshot = tmp_path / "hf" / repo / "snapshots" / "0123abcd"  # the hub cache's layout: refs name snapshots
    snapshot.mkdir(parents=True)
    save_file(state, snapshot / "model.safetensors")
    (tmp_path / "hf" / repo / "refs").mkdir()
    (tmp_path / "hf" / repo / "refs" / "main").write_text("0123abcd")
    model = ReIDModel(f"timm:{name}", 3, pretrained="imagenet")
    assert torch.equal(model.stages[0][0].weight, state["conv_stem.weight"])
    assert model.start["name"] == "timm timm/mobilenetv4_conv_small.e2400_r224_in1k"
