"""Where a backbone's first weights come from, and the record that says so in every metrics.json.

- `imagenet`: the published ImageNet weights of that backbone (torchvision's, the IBN-Net release's, timm's
  default tag), read from torch hub's cache (`$TORCH_HOME/hub/checkpoints/`, as torchvision itself keeps
  them; a timm model with no release URL: Hugging Face's cache) and fetched into it on first use: naming
  `imagenet` in a config is the request to download. Offline and not cached, one line names the file, its
  address and the folder to put it in.
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
from reid_kd.models.catalog import BACKBONES, PRETRAINED
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


def require_timm():
    """The timm module, or one line naming the extra that installs it."""
    try:
        import timm
    except ImportError:
        raise UserError("timm backbones need the timm extra: pip install -e '.[timm]'") from None
    return timm


def timm_weights(backbone: str):
    """timm's default pretrained config of `timm:<name>` (its release URL and Hugging Face id)."""
    name = backbone.partition(":")[2]
    cfg = require_timm().models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.url or cfg.hf_hub_id):
        raise ConfigError(f"timm publishes no pretrained weights for {name!r}; use pretrained: null or a file")
    return cfg


def imagenet_source(backbone: str) -> tuple[str | None, str]:
    """(URL of the weights file, or None where only Hugging Face has it; the weights' name) of a backbone."""
    if backbone.startswith("timm:"):
        cfg = timm_weights(backbone)
        return cfg.url or None, f"timm {cfg.hf_hub_id or backbone}"
    url = BACKBONES[backbone].info.get("url")
    if url:  # a release of its own (IBN-Net)
        return url, Path(url).name.split("-")[0] + " (IBN-Net v1.0 release)"
    weights = torchvision.models.get_model_weights(backbone).DEFAULT  # e.g. ResNet50_Weights.IMAGENET1K_V2
    return weights.url, f"{type(weights).__name__}.{weights.name}"


def imagenet_file(backbone: str) -> Path:
    """The torch hub cache file of `backbone`'s ImageNet weights (its URL's file name, as torchvision keeps it)."""
    return hub_checkpoints() / Path(imagenet_source(backbone)[0]).name


def fetch_imagenet(backbone: str) -> Start:
    """The cached ImageNet weights of `backbone`, downloaded into the hub cache first if absent."""
    url, name = imagenet_source(backbone)
    if url is None:
        return Start("imagenet", _fetch_from_hugging_face(timm_weights(backbone).hf_hub_id), name)
    file = hub_checkpoints() / Path(url).name
    if file.is_file():
        check_published(file, url, backbone)
        return Start("imagenet", file, name)
    try:
        torch.hub.load_state_dict_from_url(url, model_dir=str(file.parent), progress=True,
                                           check_hash=True, weights_only=True)
    except (OSError, RuntimeError) as e:  # URLError is an OSError; a bad hash is a RuntimeError
        raise WeightsUnavailableError(
            f"ImageNet weights of {backbone} are not cached and could not be downloaded ({_reason(e)}): put "
            f"{file.name} (from {url}) into {file.parent}/") from None
    return Start("imagenet", file, name)


def published_prefix(file: Path) -> str | None:
    """The SHA-256 prefix a published weights file's name carries (`resnet18-f37072fd.pth`: f37072fd), None if
    its name carries none (torch hub's own rule, `torch.hub.HASH_REGEX`)."""
    match = torch.hub.HASH_REGEX.search(file.name)
    return match.group(1) if match and match.group(1) else None


def check_published(file: Path, url: str, backbone: str) -> None:
    """A file found in the cache under a published name must be that file: torch hub checks the SHA-256 prefix
    the name carries when it downloads, and this checks a file put there by other means (a truncated or empty
    copy, other weights) the same way, before a run records it as the published ImageNet weights."""
    prefix = published_prefix(file)
    if prefix is None:
        return
    digest = sha256(file)
    if not digest.startswith(prefix):
        what = "an empty file" if file.stat().st_size == 0 else f"its SHA-256 begins {digest[:len(prefix)]}"
        raise WeightsUnavailableError(
            f"{file} is not the published ImageNet weights of {backbone} ({what}, its name says {prefix}); delete "
            f"it to have them downloaded again, or put the file from {url} there")


def _fetch_from_hugging_face(repo: str) -> Path:
    """A timm model's weights from the Hugging Face hub, through its cache (`$HF_HUB_CACHE`)."""
    import huggingface_hub  # comes with timm

    try:
        return Path(huggingface_hub.hf_hub_download(repo, "model.safetensors"))
    except Exception as e:  # offline, missing or refused: the hub's errors have no common base class
        folder = Path(huggingface_hub.constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
        raise WeightsUnavailableError(
            f"weights {repo} are not cached and could not be downloaded ({_reason(e)}): fetch "
            f"https://huggingface.co/{repo} (model.safetensors) into {folder}/ (`hf download {repo}` where online)"
            ) from None


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
