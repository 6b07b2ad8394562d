"""Where a backbone's first weights come from, and the record that says so in every metrics.json.

- `imagenet`: torchvision's published ImageNet weights of that backbone, read from torch hub's cache
  (`$TORCH_HOME/hub/checkpoints/`, as torchvision itself keeps them) and fetched into it on first use:
  naming `imagenet` in a config is the request to download. Offline and not cached, one line names the
  file, its address and the folder to put it in.
- `synth`: a backbone pretrained on disjoint synthetic vehicles (`engine/pretrain.py` builds it and hands
  over a `Start` of kind "synth").
- any other string: a local torchvision state dict of that architecture.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from reid_kd.errors import ConfigError, UserError
from reid_kd.models.catalog import PRETRAINED
from reid_kd.utils.io import load_torch

HEAD_KEYS = ("fc.", "classifier.")  # ImageNet heads: re-ID replaces them with its BN neck and classifier


class WeightsUnavailableError(UserError, FileNotFoundError):
    """Weights that are neither cached nor downloadable here; the message says where to put the file."""


@dataclass(frozen=True)
class Start:
    """How a network began: kind "none", "imagenet", "synth" or "file"; the weights file; their name
    (torchvision's weight enum, or the synth pretraining's cache key)."""

    kind: str = "none"
    file: Path | None = None
    name: str | None = None

    def record(self) -> dict:
        """What metrics.json and checkpoints keep: kind, name, and the file's SHA-256 (the weights themselves)."""
        out: dict = {"kind": self.kind}
        if self.name is not None:
            out["name"] = self.name
        if self.file is not None:
            out["file"] = self.file.name if self.kind == "imagenet" else str(self.file)
            out["sha256"] = sha256(self.file)
        return out


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hub_checkpoints() -> Path:
    """torch hub's weight cache: `$TORCH_HOME/hub/checkpoints` (by default ~/.cache/torch/hub/checkpoints)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def imagenet_weights(backbone: str):
    """torchvision's default ImageNet weight enum of a backbone (e.g. ResNet50_Weights.IMAGENET1K_V2)."""
    return torchvision.models.get_model_weights(backbone).DEFAULT


def imagenet_file(backbone: str) -> Path:
    """The cache file torchvision reads for `backbone`'s ImageNet weights (its URL's file name)."""
    return hub_checkpoints() / Path(imagenet_weights(backbone).url).name


def fetch_imagenet(backbone: str) -> Start:
    """The cached ImageNet weights of `backbone`, downloaded into the hub cache first if absent."""
    weights, file = imagenet_weights(backbone), imagenet_file(backbone)
    if not file.is_file():
        try:
            torch.hub.load_state_dict_from_url(weights.url, model_dir=str(file.parent), progress=True,
                                               check_hash=True, weights_only=True)
        except (OSError, RuntimeError) as e:  # URLError is an OSError; a bad hash is a RuntimeError
            raise WeightsUnavailableError(
                f"ImageNet weights of {backbone} are not cached and could not be downloaded ({_reason(e)}): put "
                f"{file.name} (from {weights.url}) into {file.parent}/") from None
    return Start("imagenet", file, f"{type(weights).__name__}.{weights.name}")


def _reason(error: Exception) -> str:
    return str(getattr(error, "reason", None) or error).splitlines()[0][:120]


def resolve(pretrained: str | Start | None, backbone: str) -> Start:
    """The `Start` a config's `pretrained` names: a source of `PRETRAINED` or a file (`synth` comes resolved
    from engine/pretrain.py)."""
    if isinstance(pretrained, Start):
        return pretrained
    if not pretrained:
        return Start()
    if pretrained in PRETRAINED:
        source = PRETRAINED[pretrained]
        if source.target is None:
            raise ValueError(f"pretrained {pretrained!r} is built by reid_kd.engine.pretrain; "
                             "pass the Start it returns")
        return source(backbone)
    file = Path(pretrained).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {file} (give a local torchvision state dict, "
                                "or 'imagenet' or 'synth')")
    return Start("file", file)


def load_into(net: nn.Module, start: Start) -> None:
    """Load a torchvision state dict into `net`; every weight but the ImageNet head must be there."""
    file = start.file
    state = load_torch(file)
    state = state.get("state_dict", state) if isinstance(state, dict) else {}
    own = net.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ConfigError(f"pretrained weights {file} hold nothing for this backbone; give a torchvision state "
                          "dict of the same architecture")
    net.load_state_dict(usable, strict=False)
    missing = [k for k in own if k not in usable and not k.startswith(HEAD_KEYS)]
    if missing:
        raise ConfigError(f"pretrained weights {file} lack {len(missing)} of this backbone's weights, e.g. "
                          f"{missing[:3]}; give a torchvision state dict of the same architecture")


def describe(record) -> str:
    """A start record in words, for leaderboard headers (runs before records: True or False)."""
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
