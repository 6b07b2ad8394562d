"""CRD: Tian, Krishnan and Isola, "Contrastive Representation Distillation", ICLR 2020.

Both embeddings pass through learned linear heads to `feat_dim` (128) and are L2-normalised. Each
student embedding is contrasted with the teacher embedding of the same image (positive) against
`nce_k` negatives, and symmetrically each teacher embedding against student negatives, with the
paper's NCE objective at temperature `nce_t` (0.07): h(x) = P(x) / (P(x) + K·P_n), where
P(x) = exp(x/τ) / Z, Z fixed from the first batch's mean, and the loss is
−[log h(positive) + Σ log(1 − h(negative))].
Our reading (documented choice): CRD indexes a memory of every training image by sample index;
the distiller interface does not see sample indices, so the negatives are a FIFO queue of the last
`nce_k` = 16384 embeddings of each network (noise distribution uniform over the queue, so
K·P_n = 1), updated after the loss, initialised with random unit vectors, kept in buffers (with the
constants Z) so they survive checkpoint and resume. Defaults: `weight = 0.8` (RepDistiller's β
for CRD), `feat_dim = 128`, `nce_k = 16384`, `nce_t = 0.07` (the paper's).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid_kd.config import Choice
from reid_kd.distill.common import model_widths
from reid_kd.distill.registry import Distiller, register
from reid_kd.models.reid_model import ModelOutput


def nce_loss(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, temperature: float,
             z: torch.Tensor) -> torch.Tensor:
    """CRD's NCE loss with K = len(negatives) and uniform noise over them (K·P_n = 1); z: the constant Z."""
    pos = torch.exp((anchor * positive).sum(1) / temperature) / z
    neg = torch.exp(anchor @ negatives.t() / temperature) / z
    log_h_pos = torch.log(pos / (pos + 1.0))
    log_h_neg = torch.log(1.0 / (neg + 1.0))
    return -(log_h_pos + log_h_neg.sum(1)).mean()


@register
class CRD(Distiller):
    name = "crd"
    description = "CRD (Tian et al., ICLR 2020): NCE contrast of projected embeddings against queued negatives"
    options = {"weight": 0.8, "feat_dim": 128, "nce_k": 16384, "nce_t": 0.07,
               "embedding": Choice("global_feat", "bn_feat")}

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: dict):
        super().__init__(student, teacher, cfg)
        self.weight, self.t, self.embedding = cfg["weight"], cfg["nce_t"], cfg["embedding"]
        dim, k = cfg["feat_dim"], cfg["nce_k"]
        if k < 1:
            raise ValueError("distill.crd.nce_k must be at least 1")
        self.embed_s = nn.Linear(model_widths(student)[1], dim)
        self.embed_t = nn.Linear(model_widths(teacher)[1], dim)
        g = torch.Generator().manual_seed(0)  # a local stream: building CRD leaves torch's RNG untouched
        self.register_buffer("queue_s", F.normalize(torch.randn(k, dim, generator=g), dim=1))
        self.register_buffer("queue_t", F.normalize(torch.randn(k, dim, generator=g), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("z_s", torch.full((), -1.0))  # Z of the student-anchored NCE, set on first use
        self.register_buffer("z_t", torch.full((), -1.0))

    @torch.no_grad()
    def _init_z(self, z: torch.Tensor, anchor: torch.Tensor, negatives: torch.Tensor) -> None:
        if z < 0:  # as CRD: Z = mean of exp(x/τ) over the first batch's pairs, times the noise size
            z.copy_(torch.exp(anchor @ negatives.t() / self.t).mean() * negatives.shape[0])

    @torch.no_grad()
    def enqueue(self, e_s: torch.Tensor, e_t: torch.Tensor) -> None:
        k = self.queue_s.shape[0]
        n = min(len(e_s), k)
        slots = (self.ptr + torch.arange(n, device=e_s.device)) % k
        self.queue_s[slots] = e_s[-n:].detach().float()
        self.queue_t[slots] = e_t[-n:].detach().float()
        self.ptr.copy_((self.ptr + n) % k)

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        e_s = F.normalize(self.embed_s(getattr(student, self.embedding).float()), dim=1)
        e_t = F.normalize(self.embed_t(getattr(teacher, self.embedding).float()), dim=1)
        self._init_z(self.z_s, e_s.detach(), self.queue_t)
        self._init_z(self.z_t, e_t.detach(), self.queue_s)
        # copies: autograd keeps the negatives for backward, and the queues change in place below
        q_s, q_t = self.queue_s.clone(), self.queue_t.clone()
        loss = nce_loss(e_s, e_t, q_t, self.t, self.z_s) + nce_loss(e_t, e_s, q_s, self.t, self.z_t)
        self.enqueue(e_s, e_t)
        return {"crd": self.weight * loss}
