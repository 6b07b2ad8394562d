"""PKT: Passalis and Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer", ECCV 2018.

Cosine similarities of the L2-normalised embeddings, mapped to [0, 1] by (s + 1) / 2 and normalised
per row into conditional probabilities; loss: KL(teacher ‖ student) summed per row, averaged over
all entries (as in the authors' code). Defaults: `eps = 1e-7` (the authors'), `weight = 10000`
(ours: RepDistiller's β = 30000 sent 6-10× the re-ID loss's gradient into the backbone at the
quickstart scale on `bn_feat` and up to 22× in the gradient window test's state, past its bound of
20), on the `embedding` `bn_feat` (ours: the retrieval feature after the BN neck). On
`global_feat`, whose norm grows through training under the triplet loss, the normalised kernel's
gradient fades: at the quickstart scale the PKT term sent 0.13× the re-ID gradient into the backbone
after 2 epochs and 0.003× after 20 (inert); on `bn_feat`, whose scale the neck holds, about 10× at both.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid_kd.distill.base import Distiller
from reid_kd.models.reid_model import ModelOutput


def conditional_probabilities(e: torch.Tensor) -> torch.Tensor:
    e = F.normalize(e.float(), dim=1)
    sim = (e @ e.t() + 1.0) / 2.0
    return sim / sim.sum(1, keepdim=True)


class PKT(Distiller):
    name = "pkt"

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: dict):
        super().__init__(student, teacher, cfg)
        self.weight, self.eps, self.embedding = cfg["weight"], cfg["eps"], cfg["embedding"]

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        p_s = conditional_probabilities(getattr(student, self.embedding))
        p_t = conditional_probabilities(getattr(teacher, self.embedding))
        kl = p_t * torch.log((p_t + self.eps) / (p_s + self.eps))
        return {"pkt": self.weight * kl.mean()}
