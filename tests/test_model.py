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


def test_a_retrieval_head_sets_the_retrieval_width_and_trains():
    """`embedding_dim`: BN, ReLU, bias-free Linear, BN after pooling; `global_feat` (the triplet's) keeps the
    backbone's width, `bn_feat` (retrieval, the classifier's input) is the head's; widths known without a forward."""
    from reid_kd.losses import reid_losses
    from reid_kd.schema import defaults

    torch.manual_seed(0)
    model = ReIDModel("resnet18", 4, embedding_dim=24)
    assert (model.widths[-1], model.feat_dim, model.retrieval_dim, model.embedding_dim) == (512, 512, 24, 24)
    assert [type(m).__name__ for m in model.neck] == ["BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert model.neck[2].bias is None and model.classifier.in_features == 24
    out = model(torch.randn(8, 3, 32, 32))
    assert out.global_feat.shape == (8, 512) and out.bn_feat.shape == (8, 24) and out.logits.shape == (8, 4)
    before = model.neck[2].weight.detach().clone()
    losses = reid_losses(out, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), defaults()["train"])
    assert set(losses) == {"id", "triplet"}
    sum(losses.values()).backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert not torch.equal(model.neck[2].weight, before) and model.neck[3].bias.grad.abs().sum() > 0
    plain = ReIDModel("resnet18", 4)
    assert plain.retrieval_dim == plain.feat_dim == 512 and plain.embedding_dim is None
    assert isinstance(plain.neck, torch.nn.BatchNorm1d)


def test_input_size_resizes_inside_the_forward():
    """`input_size`: the network sees its input resized (bilinear, antialiased); without it, as given."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    small = ReIDModel("mobilenet_v3_small", 3, input_size=[32, 16]).eval()
    plain = ReIDModel("mobilenet_v3_small", 3).eval()
    plain.load_state_dict(small.state_dict())
    x = torch.randn(2, 3, 64, 48)
    resized = F.interpolate(x, size=(32, 16), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        got, want = small(x), plain(resized)
    assert got.feats[0].shape[-2:] == want.feats[0].shape[-2:] == (8, 4)  # stage 1: stride 4
    assert torch.equal(got.bn_feat, want.bn_feat)
    assert plain(x).feats[0].shape[-2:] == (16, 12)  # the default network takes the images as they come


def test_head_and_input_size_travel_with_the_weights(tmp_path):
    from reid_kd.models.checkpoint import load_model, save_model
    from reid_kd.utils.io import UnsafeFileError, load_torch, save_torch

    cfg = load_config(None, ["model.backbone=resnet18", "model.embedding_dim=16", "model.input_size=[32,32]"])
    torch.manual_seed(0)
    model = ReIDModel("resnet18", 5, embedding_dim=16, input_size=[32, 32]).eval()
    save_model(model, cfg["model"], tmp_path / "student.pt", cfg["data"])
    loaded = load_model(tmp_path / "student.pt").eval()
    assert (loaded.retrieval_dim, loaded.input_size) == (16, (32, 32))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x).bn_feat, model(x).bn_feat)
    state = load_torch(tmp_path / "student.pt")
    state["model_cfg"]["input_size"] = [32]
    save_torch(state, tmp_path / "bad.pt")
    with pytest.raises(UnsafeFileError, match="input_size"):
        load_model(tmp_path / "bad.pt")
