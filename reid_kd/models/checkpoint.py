"""The model file format (student.pt, teacher.pt): weights, the architecture that rebuilds them, and
the images they expect, so training, evaluation and deployment read a model without its config."""
from __future__ import annotations

from pathlib import Path

import torch

from reid_kd.data.transforms import model_input
from reid_kd.models.reid_model import ReIDModel, build_model
from reid_kd.utils.io import UnsafeFileError, load_torch, save_torch


def save_model(model: ReIDModel, model_cfg: dict, path: Path, data_cfg: dict) -> None:
    """Weights, architecture and the images it expects (`input`: size and normalisation, read by deploy)."""
    save_torch({"model": model.state_dict(), "model_cfg": model_cfg, "num_classes": model.num_classes,
                "input": model_input(data_cfg), "start": model.start}, path)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> ReIDModel:
    """Rebuild a model saved by `save_model` (its architecture travels with the weights).

    `model.input` is what it expects of an image (None in files written before it was recorded).
    """
    state = load_torch(path, device)
    if not isinstance(state, dict) or "model_cfg" not in state:
        raise UnsafeFileError(f"{path} is not a reid-kd model file (no 'model_cfg'); give a student.pt or teacher.pt")
    cfg = dict(state["model_cfg"], pretrained=None)
    model = build_model(cfg, state["num_classes"])
    model.load_state_dict(state["model"])
    # how it began, not how it is rebuilt (files from before start records: whether `pretrained` was set)
    model.start = state.get("start", state["model_cfg"].get("pretrained") is not None)
    model.input = state.get("input")
    return model.to(device)
