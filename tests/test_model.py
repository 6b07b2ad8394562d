import pytest
import torch
import torchvision

from reid_kd.engine.configs import load_config
from reid_kd.errors import ConfigError
from reid_kd.models.reid_model import ReIDModel


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large"])
def test_four_stages_bnneck_and_logits(name):
    model = ReIDModel(name, num_classes=7).eval()
    out = model(torch.randn(2, 3, 64, 64))
    assert len(out.feats) == 4 and all(f.dim() == 4 for f in out.feats)
    assert out.global_feat.shape == out.bn_feat.shape == (2, model.feat_dim)
    assert out.logits.shape == (2, 7)
    assert model.classifier.bias is None and not model.neck.bias.requires_grad


def test_resnet_last_stride_one_keeps_resolution():
    out = ReIDModel("resnet34", 3, last_stride=1)(torch.randn(2, 3, 64, 64))
    assert out.feats[3].shape[-1] == out.feats[2].shape[-1] == 4
    out = ReIDModel("resnet34", 3, last_stride=2)(torch.randn(2, 3, 64, 64))
    assert out.feats[3].shape[-1] == 2


def test_pretrained_weights_load_from_a_local_file(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = ReIDModel("resnet18", 5, pretrained=str(path))
    assert torch.equal(model.stages[0][0].weight, reference.conv1.weight)
    assert torch.equal(model.stages[3][1].conv2.weight, reference.layer4[1].conv2.weight)
    with pytest.raises(ValueError, match="hold nothing for this backbone"):
        ReIDModel("mobilenet_v3_small", 5, pretrained=str(path))
    with pytest.raises(FileNotFoundError):
        ReIDModel("resnet18", 5, pretrained=str(tmp_path / "absent.pth"))


def test_unknown_backbone_lists_the_available_ones():
    with pytest.raises(ValueError, match="resnet101") as error:
        ReIDModel("vgg16", 3)
    listed = str(error.value).split("registered: ", 1)[1].split(", ")
    with pytest.raises(ConfigError, match=r"model\.backbone.*registered: ") as refused:
        load_config(None, ["model.backbone=vgg16"])
    assert sorted(listed) == str(refused.value).split("registered: ", 1)[1].split(", ")  # the config says the same
    for name in listed:  # and takes each name it offers, for the student and for the teacher
        cfg = load_config(None, [f"model.backbone={name}", f"teacher.backbone={name}"])
        assert cfg["model"]["backbone"] == cfg["teacher"]["backbone"] == name


def test_mobilenet_last_stride_one_keeps_resolution():
    one = ReIDModel("mobilenet_v3_small", 3, last_stride=1)(torch.randn(2, 3, 64, 64))
    two = ReIDModel("mobilenet_v3_small", 3, last_stride=2)(torch.randn(2, 3, 64, 64))
    assert one.feats[3].shape[-1] == one.feats[2].shape[-1] == 4 and two.feats[3].shape[-1] == 2
