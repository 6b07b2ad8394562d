"""Helpers shared by the distillers (not a method; nothing here is registered)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid_kd.errors import ConfigError
from reid_kd.models.reid_model import ModelOutput

N_STAGES = 4


def model_widths(model: nn.Module, embedding: str = "global_feat") -> tuple[list[int], int]:
    """(stage widths, width of `embedding`) of a model with `stages` and `feat_dim` (ReIDModel, or any module
    returning a `ModelOutput` so built): its `widths`, else each stage's last convolution; no dummy forward.
    `bn_feat` is `retrieval_dim` wide where the model has one (a retrieval head's width), else `feat_dim`."""
    dim = retrieval_width(model) if embedding == "bn_feat" else model.feat_dim
    if hasattr(model, "widths"):
        return list(model.widths), dim
    convs = [[m for m in stage.modules() if isinstance(m, nn.Conv2d)] for stage in model.stages]
    return [c[-1].out_channels for c in convs], dim


def retrieval_width(model: nn.Module) -> int | None:
    """The width of a model's retrieval feature `bn_feat`: its embedding head's where it has one, else the
    backbone's (`feat_dim`); None where the model does not say."""
    return getattr(model, "retrieval_dim", None) or getattr(model, "feat_dim", None)


def check_same_width(method: str, student_width: int | None, teacher_width: int | None) -> None:
    """Refuse, in one line naming the fix, retrieval features of different widths (either unknown: no check)."""
    if student_width and teacher_width and student_width != teacher_width:
        raise ConfigError(f"{method} compares the student's and teacher's retrieval features directly, but they are "
                          f"{student_width}-d and {teacher_width}-d wide: set model.embedding_dim and "
                          f"teacher.embedding_dim to the same width (e.g. 512)")


def teacher_neighbours(student_emb: torch.Tensor, teacher_emb: torch.Tensor, k: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's k nearest batch samples by the teacher's cosine similarity (itself first), in the teacher's
    order: (the student's cross similarities ŝ_i·t̂_j, the teacher's t̂_i·t̂_j), both B × min(k, B).

    The gallery side is the teacher's: the student's query vector is compared with the teacher's vectors, as
    in asymmetric retrieval (a student query against a gallery the teacher embedded)."""
    s, t = F.normalize(student_emb.float(), dim=1), F.normalize(teacher_emb.float(), dim=1)
    t_top, order = (t @ t.t()).topk(min(k, len(t)), dim=1)
    return (s @ t.t()).gather(1, order), t_top


def layer_feature(out: ModelOutput, index: int, embedding: str = "global_feat") -> torch.Tensor:
    """Layer `index` as an N×C vector: 0..3 are the stage maps (globally average pooled), 4 the embedding."""
    if index == len(out.feats):
        return getattr(out, embedding)
    return out.feats[index].mean(dim=(2, 3))


def check_layers(key: str, layers: list[int], embedding: str, *models: nn.Module) -> None:
    """Reject a `layer_feature` list that is empty, out of range, or names one vector twice.

    The pooled last stage (3) *is* `global_feat`, and `bn_feat` is `global_feat` where a model has no
    BN neck; a relation counted twice weighs double, and its evolution between the pair is always 0.
    """
    if not layers:
        raise ConfigError(f"config key '{key}': at least one layer must be distilled")
    bad = [i for i in layers if not 0 <= i <= N_STAGES]
    if bad:
        raise ConfigError(f"config key '{key}': layer indices must be in 0..{N_STAGES} "
                          f"(stages, then {N_STAGES} = the embedding); got {bad}")
    repeated = sorted({i for i in layers if layers.count(i) > 1})
    if repeated:
        raise ConfigError(f"config key '{key}' lists layer {repeated} more than once; list each layer once")
    last, emb = N_STAGES - 1, N_STAGES
    no_neck = any(isinstance(getattr(m, "neck", None), nn.Identity) for m in models)
    if last in layers and emb in layers and (embedding == "global_feat" or no_neck):
        why = "the pooled last stage is global_feat" if embedding == "global_feat" else \
            "bn_feat is global_feat in a model without a BN neck (model.neck: none)"
        raise ConfigError(f"config key '{key}': layers {last} and {emb} are the same feature here ({why}); "
                          f"drop one of them" + (", or use embedding bn_feat with a BN neck" if not no_neck else ""))


def kl_soft(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            teacher_temperature: float | None = None) -> torch.Tensor:
    """KL(softmax(t / T_t) ‖ softmax(s / T)) averaged over rows, times T² (Hinton et al.); T_t: T where not given."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / (teacher_temperature or temperature), dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature ** 2


def matching_map(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """The student's map resized (bilinear) to the teacher's H×W when they differ."""
    if student_map.shape[-2:] != teacher_map.shape[-2:]:
        return F.interpolate(student_map, size=teacher_map.shape[-2:], mode="bilinear", align_corners=False)
    return student_map
