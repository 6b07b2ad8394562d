"""UGD: Zhang et al., "Unambiguous granularity distillation for asymmetric image retrieval", Neural Networks 187,
2025.

Two granularities:
- global (`ugd_global`): the mean over the batch of the Euclidean distance between the L2-normalised
  retrieval features of the student and the teacher, ‖ŝ_i − t̂_i‖, times `weight_global`;
- local (`ugd_local`): the student's map at `student_layer` and the teacher's last stage map, each average
  pooled to a g × g grid and to a ⌊g/2⌋ × ⌊g/2⌋ grid, g being the student map's height (at least 1). Each
  teacher cell runs through the teacher's own head (its neck and classifier, `ReIDModel.head`, in eval mode,
  no gradient): a retrieval feature and an ID prediction. Each student cell runs through a learned projector
  per grid (BN → bias-free linear to the teacher's retrieval width → BN, Kaiming-initialised). Per grid,
  the mean of ‖student cell − teacher cell‖ (both L2-normalised) over the cells the teacher's classifier
  assigns to the image's identity: the "unambiguous" cells (none: 0). The two grids' means are added,
  times `weight_local`.

Defaults (`reidkd methods` prints their sources): AIR-Distiller (SCY-X/D3still, `distillers/UGD.py`, the
authors' code) with its MSMT17 ResNet-101 → ResNet-18 config: `weight_global = 1` (α), `weight_local = 2`
(β), times its KD weight 1; `student_layer = 2`, its DISTILLATION_LAYER 3, 1-based: ResNet-18's layer3, our
stage index 2; the teacher's map is its last (`feats[-1]`), our stage 3. The weights are AIR-Distiller's, not
yet checked against our gradient window or tuned.

Differences from AIR-Distiller's UGD.py:
- the grid: it pools to (S/16) × (S/16) and half that, S the student's input height, which is the height of
  its distilled layer3 map (stride 16); we take the distilled map's height, the same there, and keep a half
  grid of at least 1 × 1 where it would fail on a map of one row;
- the projectors map to the teacher's retrieval width (its: a fixed 512, the width of its networks' heads);
- batch: it distils a separate, randomly shuffled distillation batch of 256 images (the student at low, the
  teacher at high resolution) with their labels; we distil the training P×K batch, both networks seeing the
  same images at the training resolution;
- the feature: our `bn_feat` (after the BN neck, or the retrieval embedding head where the model has one)
  for its `retrieval_feat` (its BN-ReLU-Linear-BN head's output), both networks' of one width; the teacher's
  cells run through our head (neck, embedding head where there is one, classifier) for its `fc`, the same
  BN-ReLU-Linear-BN head and classifier;
- two named terms (`alpha` and `beta` parts) whose sum is its one `loss_kd`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid_kd.distill.base import Distiller
from reid_kd.distill.common import model_widths, retrieval_width
from reid_kd.errors import ConfigError
from reid_kd.models.reid_model import ModelOutput


def projector(width: int, dim: int) -> nn.Sequential:
    """BN → bias-free linear → BN, Kaiming-initialised (fan-out) as AIR-Distiller's."""
    head = nn.Sequential(nn.BatchNorm1d(width), nn.Linear(width, dim, bias=False), nn.BatchNorm1d(dim))
    nn.init.kaiming_normal_(head[1].weight, a=0, mode="fan_out")
    return head


def cells(feature_map: torch.Tensor, size: int) -> torch.Tensor:
    """An N×C×H×W map average pooled to size × size: (N·size²)×C, each image's cells in row-major order."""
    pooled = F.adaptive_avg_pool2d(feature_map, (size, size))
    return pooled.flatten(2).transpose(1, 2).reshape(-1, feature_map.shape[1])


class UGD(Distiller):
    name = "ugd"
    same_width = True

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: dict):
        super().__init__(student, teacher, cfg)
        if not hasattr(teacher, "head") or getattr(teacher, "classifier", None) is None:
            raise ConfigError("ugd classifies the teacher's local features with its ID classifier: the teacher "
                              "needs a head and a classifier (a ReIDModel with num_classes > 0)")
        self.layer, self.w_global, self.w_local = cfg["student_layer"], cfg["weight_global"], cfg["weight_local"]
        self.teacher_net = (teacher,)  # in a tuple: not a submodule (never trained, saved or moved by the distiller)
        width, dim = model_widths(student)[0][self.layer], retrieval_width(teacher)
        self.projector, self.projector_half = projector(width, dim), projector(width, dim)

    @torch.no_grad()
    def teacher_head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's (retrieval feature, logits) of pooled vectors, in eval mode (its BN statistics untouched)."""
        teacher = self.teacher_net[0]
        modes = [(m, m.training) for m in teacher.modules()]
        teacher.eval()
        try:
            return teacher.head(x)
        finally:
            for m, mode in modes:
                m.training = mode

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        s_glob, t_glob = F.normalize(student.bn_feat, dim=1), F.normalize(teacher.bn_feat, dim=1)
        losses = {"ugd_global": self.w_global * torch.linalg.vector_norm(t_glob - s_glob, dim=1).mean()}
        s_map, t_map = student.feats[self.layer], teacher.feats[-1]
        g = s_map.shape[-2]
        local = []
        for size, proj in ((g, self.projector), (max(g // 2, 1), self.projector_half)):  # two grids
            t_feat, t_logits = self.teacher_head(cells(t_map, size))
            s_feat = proj(cells(s_map, size))
            dist = torch.linalg.vector_norm(F.normalize(t_feat, dim=1) - F.normalize(s_feat, dim=1), dim=1)
            right = (t_logits.argmax(1) == targets.repeat_interleave(size * size)).float()
            local.append((dist * right).sum() / right.sum().clamp_min(1))  # mean over the unambiguous cells
        losses["ugd_local"] = self.w_local * (local[0] + local[1])
        return losses
