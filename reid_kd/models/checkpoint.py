"""The model file format (student.pt, teacher.pt): weights, the architecture that rebuilds them, and
the images they expect, so training, evaluation and deployment read a model without its config."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch

from reid_kd.data.transforms import model_input
from reid_kd.models.catalog import BACKBONES
from reid_kd.models.reid_model import ReIDModel, build_model
from reid_kd.utils.io import UnsafeFileError, load_torch, save_torch


def save_model(model: ReIDModel, model_cfg: dict, path: Path, data_cfg: dict, distilled_from: str | None = None
               ) -> None:
    """Weights, architecture and the images it expects (`input`: size and normalisation, read by deploy), and
    for a distilled student the `weights_digest` of its teacher: the space its features were trained toward,
    which `reidkd index` checks before a student searches a gallery that teacher embedded."""
    save_torch({"model": model.state_dict(), "model_cfg": model_cfg, "num_classes": model.num_classes,
                "input": model_input(data_cfg), "start": model.start, "distilled_from": distilled_from}, path)


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a network's weights by value (names, types, shapes, numbers): the same for the network in
    memory, in any memory layout, and for it rebuilt from its file, unlike the file's own digest."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_model(path: str | Path, device: torch.device | str = "cpu") -> ReIDModel:
    """Rebuild a model saved by `save_model` (its architecture travels with the weights).

    `model.input` is what it expects of an image (None in files written before it was recorded).
    """
    state = load_torch(path, device)
    if not isinstance(state, dict) or "model_cfg" not in state:
        raise UnsafeFileError(f"{path} is not a reid-kd model file (no 'model_cfg'); give a student.pt or teacher.pt")
    why = _record_fault(state)
    if why:
        raise UnsafeFileError(f"{path} is not a model file reid-kd wrote ({why}); give a student.pt or teacher.pt "
                              "that `reidkd run` or `reidkd bench` wrote")
    cfg = dict(state["model_cfg"], pretrained=None)
    model = build_model(cfg, state["num_classes"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:  # missing, unexpected or wrongly shaped tensors
        detail = " ".join(str(e).split())[:160]
        raise UnsafeFileError(f"{path} is not a model file reid-kd wrote (its weights do not fit its "
                              f"{cfg['backbone']}: {detail}); give a student.pt or teacher.pt that reidkd wrote"
                              ) from None
    # how it began, not how it is rebuilt (files from before start records: whether `pretrained` was set)
    model.start = state.get("start", state["model_cfg"].get("pretrained") is not None)
    model.input = state.get("input")
    model.distilled_from = state.get("distilled_from")  # files from before it was recorded: None
    return model.to(device)


def input_config(model: ReIDModel, data_cfg: dict | None = None) -> dict:
    """The images a saved model is given: `data_cfg` (what it says beyond the images: loaders, batch size) at
    the size its checkpoint records (`model.input`). That is the size the model was trained on, and the one its
    export and its gallery index are made at, so `reidkd eval` and `reidkd index` score it as it was trained and
    as it is deployed, whatever size the config at hand gives; files from before sizes were recorded keep the
    config's. Normalisation needs nothing: every model here takes ImageNet's mean and std."""
    data = dict(data_cfg or {})
    if model.input is not None:
        data |= {"height": model.input["height"], "width": model.input["width"]}
    return data


DIGEST = re.compile(r"[0-9a-f]{64}")
MAX_SIDE = 4096  # pixels: an input size recorded beyond it is not one a re-ID model was trained at


def _record_fault(state: dict) -> str | None:
    """What in a model file's record cannot be a model reid-kd saved (checked before any network is built)."""
    cfg, weights, n = state["model_cfg"], state.get("model"), state.get("num_classes")
    if not isinstance(cfg, dict) or not {"backbone", "last_stride", "neck"} <= cfg.keys():
        return "'model_cfg' lacks backbone, last_stride or neck"
    if cfg["backbone"] not in BACKBONES:
        return f"unknown backbone {cfg['backbone']!r}"
    if cfg["last_stride"] not in (1, 2) or cfg["neck"] not in ("bnneck", "none"):
        return f"last_stride {cfg['last_stride']!r} / neck {cfg['neck']!r}"
    dim, size = cfg.get("embedding_dim"), cfg.get("input_size")
    if dim is not None and not (_whole(dim) and dim >= 1 and cfg["neck"] == "bnneck"):
        return f"embedding_dim {dim!r} is not a positive whole number with neck bnneck"
    if size is not None and not (isinstance(size, (list, tuple)) and len(size) == 2
                                 and all(_side(v) for v in size)):
        return f"input_size {size!r} is not [height, width] in whole pixels from 16 to {MAX_SIDE}"
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        return "'model' is not a table of tensors"
    classifier = weights.get("classifier.weight")
    if not _whole(n) or n < 0 \
            or (classifier.shape[0] if classifier is not None and classifier.dim() == 2 else 0) != n:
        return f"num_classes {n!r} does not match its classifier's weights"
    spec = state.get("input")
    if spec is not None and not (isinstance(spec, dict) and all(_side(spec.get(k)) for k in ("height", "width"))):
        return f"input size {spec!r} is not whole numbers of pixels from 16 to {MAX_SIDE}"
    teacher = state.get("distilled_from")
    if teacher is not None and not (isinstance(teacher, str) and DIGEST.fullmatch(teacher)):
        return f"distilled_from {str(teacher)[:40]!r} is not a SHA-256 digest"
    return None


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _side(value) -> bool:
    """A recorded image side: whole pixels, from 16 to MAX_SIDE."""
    return _whole(value) and 16 <= value <= MAX_SIDE
