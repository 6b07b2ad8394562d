"""CRD: Tian, Krishnan and Isola, "Contrastive Representation Distillation", ICLR 2020.

As the official code computes it (HobbitLong/RepDistiller: `crd/criterion.py`, `crd/memory.py`, and
the CIFAR-100 sampler of `dataset/cifar100.py` in its default `exact` mode):
- both embeddings pass through learned linear heads to `feat_dim` and are L2-normalised;
- a memory holds one slot per training image and per network (N × feat_dim, initialised uniformly
  in ±1/√(feat_dim/3)); after the loss, each batch image's slot moves to the normalised
  `nce_m`·slot + (1 − `nce_m`)·embedding;
- the student embedding of image i is contrasted with the *teacher's memory slot* of i (positive,
  no gradient) against `nce_k` teacher slots drawn uniformly from the images of *other* classes
  (without replacement when there are enough, as the official sampler); symmetrically the teacher
  embedding against the student's memory;
- NCE with P(x) = exp(x/τ) / Z, Z fixed from the first batch as mean(exp(x/τ)) · N, noise
  P_n = 1/N: loss = −[log h(pos) + Σ log(1 − h(neg))] averaged over anchors, h = P / (P + K/N).
Scores are read from the anchors' product with the whole memory (B × N), which equals the
official gather of K+1 rows per anchor at a fraction of its memory. Negatives use torch's RNG,
which the trainer reseeds every epoch, so a resumed run draws the same negatives.
Defaults: `weight = 0.8` (RepDistiller's β for CRD), `feat_dim = 128`, `nce_k = 16384`,
`nce_t = 0.07`, `nce_m = 0.5` (the official defaults), `embedding = global_feat` (ours: the pooled
feature before the neck, as the official code's penultimate feature).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reid_kd.distill.base import Distiller
from reid_kd.distill.common import model_widths
from reid_kd.errors import ConfigError
from reid_kd.models.reid_model import ModelOutput
from reid_kd.utils import distributed


def nce_loss(scores: torch.Tensor, z: torch.Tensor, temperature: float, n_data: int) -> torch.Tensor:
    """CRD's ContrastLoss on B × (1+K) raw scores, column 0 the positive; `z` the constant Z."""
    p = torch.exp(scores / temperature) / z
    noise = (scores.shape[1] - 1) / n_data  # K · P_n
    eps = 1e-7  # as the official code
    log_pos = torch.log(p[:, 0] / (p[:, 0] + noise + eps))
    log_neg = torch.log(noise / (p[:, 1:] + noise + eps))
    return -(log_pos.sum() + log_neg.sum()) / scores.shape[0]


class CRD(Distiller):
    name = "crd"
    per_sample = True

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: dict, train_targets: torch.Tensor):
        super().__init__(student, teacher, cfg)
        self.weight, self.t, self.m, self.k = cfg["weight"], cfg["nce_t"], cfg["nce_m"], cfg["nce_k"]
        self.embedding = cfg["embedding"]
        dim = cfg["feat_dim"]
        self.embed_s = nn.Linear(model_widths(student, self.embedding)[1], dim)
        self.embed_t = nn.Linear(model_widths(teacher, self.embedding)[1], dim)
        targets = torch.as_tensor(train_targets, dtype=torch.long)
        if len(torch.unique(targets)) < 2:
            raise ConfigError("CRD draws negatives from other classes: the training set needs at least two identities")
        n, stdv = len(targets), 1.0 / math.sqrt(dim / 3)
        g = torch.Generator().manual_seed(0)  # a local stream: building CRD leaves torch's RNG untouched
        self.register_buffer("memory_s", torch.rand(n, dim, generator=g) * 2 * stdv - stdv)
        self.register_buffer("memory_t", torch.rand(n, dim, generator=g) * 2 * stdv - stdv)
        self.register_buffer("labels", targets)
        self.register_buffer("z_s", torch.full((), -1.0))  # Z of the student-anchored NCE, set on first use
        self.register_buffer("z_t", torch.full((), -1.0))

    def draw_negatives(self, targets: torch.Tensor) -> torch.Tensor:
        """B × K dataset indices, uniform over the images of other classes than each anchor's."""
        other = self.labels[None, :] != targets[:, None]  # B × N
        n_other = other.sum(1)
        if self.k <= int(n_other.min()):  # without replacement: the K smallest of uniform keys
            keys = torch.rand(other.shape, device=other.device).masked_fill(~other, 2.0)
            return keys.topk(self.k, dim=1, largest=False).indices
        # with replacement: the j-th other-class image for uniform j, via the cumulative count
        pick = (torch.rand(len(targets), self.k, device=other.device) * n_other[:, None]).long()
        return torch.searchsorted(other.long().cumsum(1), pick + 1)

    @torch.no_grad()
    def _init_z(self, z: torch.Tensor, scores: torch.Tensor) -> None:
        if z < 0:  # as the official code: mean of exp(x/τ) over the first batch's scores, times N
            z.copy_(torch.exp(scores / self.t).mean() * self.labels.numel())

    @torch.no_grad()
    def update_memory(self, memory: torch.Tensor, indices: torch.Tensor, e: torch.Tensor) -> None:
        memory[indices] = F.normalize(memory[indices] * self.m + e.detach().float() * (1 - self.m), dim=1)

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor,
                indices: torch.Tensor) -> dict[str, torch.Tensor]:
        e_s = F.normalize(self.embed_s(getattr(student, self.embedding).float()), dim=1)
        e_t = F.normalize(self.embed_t(getattr(teacher, self.embedding).float()), dim=1)
        picks = torch.cat([indices[:, None], self.draw_negatives(targets)], dim=1)  # column 0: the positive
        # products with the whole memory, then the picked columns. The memories are buffers (no gradient);
        # copies, since autograd keeps them for backward and they are updated in place below
        scores_s = (e_s @ self.memory_t.clone().t()).gather(1, picks)
        scores_t = (e_t @ self.memory_s.clone().t()).gather(1, picks)
        self._init_z(self.z_s, scores_s.detach())
        self._init_z(self.z_t, scores_t.detach())
        n = self.labels.numel()
        loss = nce_loss(scores_s, self.z_s, self.t, n) + nce_loss(scores_t, self.z_t, self.t, n)
        # every rank writes the global batch's embeddings (gathered in rank order): one memory everywhere
        indices, e_s, e_t = (distributed.gather_rows(x) for x in (indices, e_s.detach(), e_t.detach()))
        self.update_memory(self.memory_s, indices, e_s)
        self.update_memory(self.memory_t, indices, e_t)
        return {"crd": self.weight * loss}
