"""The backbone and pretraining-source registries: names and static facts, readable without torch.

A backbone entry carries its four stages' widths and strides (last stride 2), so nothing probes a
network with a dummy input to learn them; `timm:<name>` (any timm model, the optional `timm` extra)
reads them from the built model's `feature_info`. An entry with a `url` takes its ImageNet weights
from there; torchvision's from its weight enum; timm's from timm's default pretrained tag.
"""
from pathlib import Path

from reid_kd.registry import Registry

STRIDES = (4, 8, 16, 32)  # every backbone here: four stages, each halving the resolution after the stem

BACKBONES = Registry("backbone")
for _name in ("resnet18", "resnet34"):
    BACKBONES.add(_name, "reid_kd.models.backbones:resnet", "torchvision ResNet, basic blocks",
                  widths=(64, 128, 256, 512), strides=STRIDES)
for _name in ("resnet50", "resnet101", "resnet152"):
    BACKBONES.add(_name, "reid_kd.models.backbones:resnet", "torchvision ResNet, bottleneck blocks",
                  widths=(256, 512, 1024, 2048), strides=STRIDES)
# IBN-Net (Pan et al., ECCV 2018), the -a variant fast-reid's re-ID baselines use: the first normalisation of
# every block of stages 1-3 instance-normalises half its channels; ImageNet weights: the IBN-Net v1.0 release.
IBN_RELEASE = "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/"
for _name, _file, _widths in (("resnet18_ibn_a", "resnet18_ibn_a-2f571257.pth", (64, 128, 256, 512)),
                              ("resnet34_ibn_a", "resnet34_ibn_a-94bc1577.pth", (64, 128, 256, 512)),
                              ("resnet50_ibn_a", "resnet50_ibn_a-d9d0bb7b.pth", (256, 512, 1024, 2048)),
                              ("resnet101_ibn_a", "resnet101_ibn_a-59ea0ac6.pth", (256, 512, 1024, 2048))):
    BACKBONES.add(_name, "reid_kd.models.ibn:resnet_ibn_a", "ResNet-IBN-a (IBN-Net, Pan et al. 2018)",
                  widths=_widths, strides=STRIDES, url=IBN_RELEASE + _file)
BACKBONES.add("timm:<name>", "reid_kd.models.timm_backbone:timm_features",
              "any convolutional timm model (pip install -e '.[timm]')",
              widths=None, strides=None)
BACKBONES.add("mobilenet_v3_small", "reid_kd.models.backbones:mobilenet", "torchvision MobileNetV3-Small",
              widths=(16, 24, 48, 576), strides=STRIDES)
BACKBONES.add("mobilenet_v3_large", "reid_kd.models.backbones:mobilenet", "torchvision MobileNetV3-Large",
              widths=(24, 40, 112, 960), strides=STRIDES)


def describe_backbones() -> list[tuple[str, str, str]]:
    """(name, stage widths, description and where `pretrained: imagenet` takes its weights) of every backbone."""
    rows = []
    for name, entry in BACKBONES.items():
        widths = ", ".join(map(str, entry.info["widths"])) if entry.info["widths"] else "from timm's feature_info"
        if name.startswith("timm:"):
            weights = "timm's default tag: its release URL through torch hub's cache, else Hugging Face's cache"
        elif entry.info.get("url"):
            weights = f"{entry.info['url']} through torch hub's cache"
        else:
            weights = "torchvision's default weights through torch hub's cache"
        rows.append((name, widths, f"{entry.description}; imagenet: {weights}"))
    return rows


# Where a backbone's first weights come from (`model.pretrained`): a target called with the backbone's
# name; any other string names a file, a local torchvision state dict of the architecture.
PRETRAINED = Registry("pretraining source")
PRETRAINED.add("imagenet", "reid_kd.models.weights:fetch_imagenet",
               "the backbone's published ImageNet weights (torchvision's, the IBN-Net release's, timm's default), "
               "through torch hub's cache (timm's: Hugging Face's)")
PRETRAINED.add("synth", None, "a backbone pretrained on disjoint synthetic vehicles (engine/pretrain.py builds it)")


def describe_start(record) -> str:
    """A start record (`Start.record()` in models/weights.py) in words, for leaderboard headers; here, not
    beside `Start`, so the leaderboard reads records without torch (runs before records: True or False)."""
    if not isinstance(record, dict):
        return "pretrained (weights not recorded)" if record else "from scratch"
    kind = record.get("kind")
    if kind == "imagenet":
        return f"ImageNet ({record.get('name')})"
    if kind == "synth":
        return f"synth-pretrained ({record.get('name')})"
    if kind == "file":
        return f"file {Path(str(record.get('file'))).name} (SHA-256 {str(record.get('sha256'))[:12]})"
    return "from scratch"
