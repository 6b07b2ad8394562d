"""Helpers shared by the distillers (not a method; nothing here is registered)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid_kd.models.reid_model import ModelOutput

EMBEDDINGS = ("global_feat", "bn_feat")


def model_widths(model: nn.Module) -> tuple[list[int], int]:
    """(stage widths, embedding width) of a model, probed on the device it lives on.

    Any module returning a `ModelOutput` works; the probe follows the model's own device (a teacher
    loaded from a checkpoint may already sit on the GPU) and leaves its mode unchanged.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 64, device=device))
    model.train(was_training)
    return [f.shape[1] for f in out.feats], out.global_feat.shape[1]


def layer_feature(out: ModelOutput, index: int, embedding: str = "global_feat") -> torch.Tensor:
    """Layer `index` as an N×C vector: 0..3 are the stage maps (globally average pooled), 4 the embedding."""
    if index == len(out.feats):
        return getattr(out, embedding)
    return out.feats[index].mean(dim=(2, 3))


def check_layers(layers: list[int], n_stages: int = 4) -> None:
    if not layers:
        raise ValueError("at least one layer must be distilled")
    bad = [i for i in layers if not 0 <= i <= n_stages]
    if bad:
        raise ValueError(f"layer indices must be in 0..{n_stages} (stages, then {n_stages} = embedding); got {bad}")


def kl_soft(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t / T) ‖ softmax(s / T)) averaged over rows, times T² (Hinton et al.)."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature ** 2


def matching_map(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """The student's map resized (bilinear) to the teacher's H×W when they differ."""
    if student_map.shape[-2:] != teacher_map.shape[-2:]:
        return F.interpolate(student_map, size=teacher_map.shape[-2:], mode="bilinear", align_corners=False)
    return student_map
