"""The retrieval model a deployment serves: image batch -> L2-normalised `bn_feat`, and what it expects of an image.

Deployment reads only what a checkpoint records: its architecture and weights, and its `input` (size and
normalisation). Checkpoints written before `input` was recorded take it from the `config.yaml` of the
run beside them.
"""
from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from reid_kd.data.transforms import model_input
from reid_kd.errors import UserError
from reid_kd.models.checkpoint import load_model
from reid_kd.models.reid_model import ReIDModel


class RetrievalModel(nn.Module):
    """A ReIDModel's own forward, L2-normalised `bn_feat` out. A copy without the classifier: retrieval
    never reads logits, so an export neither computes them nor ships their weights."""

    def __init__(self, model: ReIDModel):
        super().__init__()
        self.model = copy.deepcopy(model)
        self.model.classifier = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model(images).bn_feat, dim=1)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> ReIDModel:
    """A student.pt or teacher.pt in eval mode, with `model.input` always set."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}; give a student.pt or teacher.pt that reidkd wrote")
    model = load_model(path, device).eval()
    if model.input is None:
        model.input = _input_from_run_config(path)
    return model


def _input_from_run_config(checkpoint: Path) -> dict:
    config = checkpoint.parent / "config.yaml"
    if not config.is_file():
        raise UserError(f"{checkpoint} records no input size and no config.yaml lies beside it; copy the "
                        "config.yaml of the run that trained it next to it")
    data = (yaml.safe_load(config.read_text()) or {}).get("data", {})
    if "height" not in data or "width" not in data:
        raise UserError(f"{config} has no data.height / data.width; copy the config.yaml of the run that trained "
                        f"{checkpoint} next to it")
    return model_input(data)


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file: ties an index or an export to the exact weights it was made with."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

