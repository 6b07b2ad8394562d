"""The backbone and pretraining-source registries: names and static facts, readable without torch.

A backbone entry carries its four stages' widths and strides (last stride 2), so nothing probes a
network with a dummy input to learn them.
"""
from reid_kd.registry import Registry

STRIDES = (4, 8, 16, 32)  # every backbone here: four stages, each halving the resolution after the stem

BACKBONES = Registry("backbone")
for _name in ("resnet18", "resnet34"):
    BACKBONES.add(_name, "reid_kd.models.backbones:resnet", "torchvision ResNet, basic blocks",
                  widths=(64, 128, 256, 512), strides=STRIDES)
for _name in ("resnet50", "resnet101", "resnet152"):
    BACKBONES.add(_name, "reid_kd.models.backbones:resnet", "torchvision ResNet, bottleneck blocks",
                  widths=(256, 512, 1024, 2048), strides=STRIDES)
BACKBONES.add("mobilenet_v3_small", "reid_kd.models.backbones:mobilenet", "torchvision MobileNetV3-Small",
              widths=(16, 24, 48, 576), strides=STRIDES)
BACKBONES.add("mobilenet_v3_large", "reid_kd.models.backbones:mobilenet", "torchvision MobileNetV3-Large",
              widths=(24, 40, 112, 960), strides=STRIDES)

# Where a backbone's first weights come from (`model.pretrained`): a target called with the backbone's
# name; any other string names a file, a local torchvision state dict of the architecture.
PRETRAINED = Registry("pretraining source")
PRETRAINED.add("imagenet", "reid_kd.models.weights:fetch_imagenet",
               "torchvision's published ImageNet weights, through torch hub's cache")
PRETRAINED.add("synth", None, "a backbone pretrained on disjoint synthetic vehicles (engine/pretrain.py builds it)")
